// A compiled load generator for the edge node's StreamClassify: one thread and one connection per
// stream, each closed-loop (send a frame, wait for its result) or paced at a frame rate.
//
// Why C++: the node and the load generator share the benchmark machine's two cores, and the Python
// client spends about 0.26 ms of CPU per frame that the node then lacks. On a device the cameras are
// elsewhere and take none of the node's CPU; this client comes closer to that (about a fifth of it).
//
//   edge-load TARGET FRAMES STREAMS SECONDS WARMUP FPS NODE_PIDS
//
// FRAMES holds serialized edgefer.v1.Frame messages, each after its length as 4 bytes little-endian
// (edge_throughput.py writes it). Prints one JSON line: frames answered in the window, the window's
// seconds, latency p50/p99 in ms, faces per frame, and the CPU seconds of this process and of the
// node (NODE_PIDS: its processes, comma-separated; from /proc) over the window. Exits 1 on a result out of order or not OK.

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "edgefer/v1/edge.grpc.pb.h"

using Clock = std::chrono::steady_clock;
using edgefer::v1::EdgeFer;
using edgefer::v1::Frame;
using edgefer::v1::FrameResult;

namespace {

std::vector<Frame> ReadFrames(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<Frame> frames;
  size_t at = 0;
  while (at + 4 <= data.size()) {
    uint32_t size = 0;
    for (int b = 0; b < 4; ++b) size |= static_cast<uint32_t>(static_cast<unsigned char>(data[at + b])) << (8 * b);
    at += 4;
    if (at + size > data.size()) throw std::runtime_error(path + ": truncated frame record");
    Frame frame;
    if (!frame.ParseFromArray(data.data() + at, static_cast<int>(size))) throw std::runtime_error(path + ": not a Frame");
    frames.push_back(std::move(frame));
    at += size;
  }
  if (frames.empty()) throw std::runtime_error(path + ": no frames");
  return frames;
}

double OwnCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

double ProcessCpuSeconds(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 0; i < 13 && fields >> field; ++i) {
    if (i == 11 || i == 12) ticks += std::stod(field);  // utime, stime
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

double ProcessesCpuSeconds(const std::string& pids) {
  std::istringstream list(pids);
  std::string pid;
  double total = 0;
  while (std::getline(list, pid, ',')) total += ProcessCpuSeconds(pid);
  return total;
}

struct StreamLog {
  std::vector<double> latencies_ms;
  long faces = 0;
  bool failed = false;
};

// One camera: its own connection (a local subchannel pool keeps channels from sharing one), frames
// numbered from 0, results checked for order and status; only results that arrive while `measuring`
// is set are logged.
void RunStream(const std::string& target, const std::vector<Frame>& frames, double fps, double phase_s,
               const std::atomic<bool>& measuring, const std::atomic<bool>& stop, StreamLog& log) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  auto stub = EdgeFer::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->StreamClassify(&context);
  Frame frame;
  FrameResult result;
  const auto start = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(phase_s));
  for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
    if (fps > 0) {
      std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / fps)));
    }
    frame = frames[i % frames.size()];
    frame.set_sequence(i);
    const auto sent = Clock::now();
    if (!stream->Write(frame) || !stream->Read(&result)) {
      std::cerr << "stream broke at frame " << i << "\n";
      log.failed = true;
      break;
    }
    if (result.sequence() != i || result.status() != edgefer::v1::FRAME_STATUS_OK) {
      std::cerr << "frame " << i << ": result " << result.ShortDebugString() << "\n";
      log.failed = true;
      break;
    }
    if (measuring.load(std::memory_order_relaxed)) {
      log.latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
      log.faces += result.faces_size();
    }
  }
  stream->WritesDone();
  stream->Finish();
}

double Percentile(std::vector<double>& values, double q) {
  std::sort(values.begin(), values.end());
  const double rank = q / 100.0 * (values.size() - 1);
  const size_t low = static_cast<size_t>(rank);
  const size_t high = std::min(low + 1, values.size() - 1);
  return values[low] + (values[high] - values[low]) * (rank - low);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::cerr << "usage: edge-load TARGET FRAMES STREAMS SECONDS WARMUP FPS NODE_PIDS\n";
    return 2;
  }
  const std::string target = argv[1];
  const int streams = std::stoi(argv[3]);
  const double seconds = std::stod(argv[4]), warmup = std::stod(argv[5]), fps = std::stod(argv[6]);
  const std::string node_pids = argv[7];
  std::vector<Frame> frames;
  try {
    frames = ReadFrames(argv[2]);
  } catch (const std::exception& error) {
    std::cerr << "edge-load: " << error.what() << "\n";
    return 2;
  }
  std::atomic<bool> measuring{false}, stop{false};
  std::vector<StreamLog> logs(streams);
  std::vector<std::thread> threads;
  for (int k = 0; k < streams; ++k) {
    const double phase = fps > 0 ? k / (streams * fps) : 0.0;  // cameras are not in step with each other
    threads.emplace_back(RunStream, target, std::cref(frames), fps, phase, std::cref(measuring), std::cref(stop), std::ref(logs[k]));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  const double own0 = OwnCpuSeconds(), node0 = ProcessesCpuSeconds(node_pids);
  const auto window_start = Clock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  const double window = std::chrono::duration<double>(Clock::now() - window_start).count();
  const double own = OwnCpuSeconds() - own0, node = ProcessesCpuSeconds(node_pids) - node0;
  stop = true;
  for (auto& thread : threads) thread.join();
  std::vector<double> all;
  long faces = 0;
  for (const auto& log : logs) {
    if (log.failed) return 1;
    all.insert(all.end(), log.latencies_ms.begin(), log.latencies_ms.end());
    faces += log.faces;
  }
  if (all.empty()) {
    std::cerr << "edge-load: no result arrived in the window\n";
    return 1;
  }
  const size_t count = all.size();
  const double p50 = Percentile(all, 50), p99 = Percentile(all, 99);
  std::printf("{\"frames\": %zu, \"seconds\": %.4f, \"p50_ms\": %.4f, \"p99_ms\": %.4f, \"faces_per_frame\": %.4f, "
              "\"client_cpu_s\": %.4f, \"node_cpu_s\": %.4f}\n",
              count, window, p50, p99, static_cast<double>(faces) / count, own, node);
  return 0;
}
