"""Every flag of every entry point says what it does; every flag that is a setting names its EDGEFER_* variable
(generated from the settings field's comment, so help, default and variable cannot drift apart)."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from compression_worker.cli import build_parser as worker_parser
from compression_worker.service.settings import WorkerServiceSettings
from edgefer.cli.classify import build_parser as classify_parser
from edgefer.cli.jobs import build_parser as jobs_parser
from edgefer.cli.registry import RegistryCliSettings
from edgefer.cli.registry import build_parser as registry_parser
from edgefer.env_settings import EnvSettings, env_name, setting_docs
from services.client.main import build_parser as client_parser
from services.demo.main import build_parser as demo_parser
from services.edge.settings import EdgeSettings
from services.rollouts.main import RolloutSettings


def settings_parser(cls: type[EnvSettings]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    return parser


PARSERS = {
    "edgefer-edge": lambda: settings_parser(EdgeSettings),
    "edgefer-worker-service": lambda: settings_parser(WorkerServiceSettings),
    "edgefer-registry": registry_parser,
    "edgefer-jobs": jobs_parser,
    "edgefer-worker": worker_parser,
    "edgefer-client": client_parser,
    "edgefer-classify": classify_parser,
    "edgefer-demo": demo_parser,
    "edgefer-rollouts": lambda: settings_parser(RolloutSettings),
}


def actions(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{prefix}{name} ")
        elif action.dest != "help":
            yield prefix + (action.option_strings[0] if action.option_strings else action.dest), action


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_every_flag_has_help(program: str) -> None:
    bare = [name for name, action in actions(PARSERS[program]()) if not (action.help or "").strip()]
    assert not bare, f"{program}: {bare}"


@pytest.mark.parametrize("cls", [EdgeSettings, WorkerServiceSettings, RegistryCliSettings, RolloutSettings])
def test_every_setting_is_documented_and_its_flag_names_its_variable(cls: type[EnvSettings]) -> None:
    docs = setting_docs(cls)
    assert not [f.name for f in fields(cls) if not docs.get(f.name)]
    helps = {a.dest: a.help for _, a in actions(settings_parser(cls))}
    for f in fields(cls):
        assert f"${env_name(f.name)}" in helps[f.name] and "default:" in helps[f.name]


def subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from subcommands(sub, f"{prefix}{name} ")


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_no_subcommand_flag_overwrites_a_top_level_setting(program: str) -> None:
    """argparse lets a subcommand's flag write the same attribute as a top-level one (a job's --fleet once
    replaced the submitter's --fleet); every dest must be one or the other."""
    parser = PARSERS[program]()
    top = {a.dest for a in parser._actions if not isinstance(a, argparse._SubParsersAction) and a.dest != "help"}
    for name, sub in subcommands(parser):
        clash = top & {a.dest for a in sub._actions if a.dest != "help"}
        assert not clash, f"{program} {name}: {sorted(clash)}"
