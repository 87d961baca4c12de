"""The rollout controller service (`edgefer-rollouts`): one per fleet, next to Redis."""
