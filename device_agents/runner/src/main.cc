// hilt-runner: loads a hilt artifact bundle (or runs a fixed self-test, or times one tuning candidate
// kernel), times it, prints one JSON line.
//
// Exit codes: 0 ok, 1 bad command line, 2 bundle refused, 3 runtime failure.
#include <dlfcn.h>
#include <dlpack/dlpack.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/runtime/tensor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "sha256.h"

#ifndef HILT_RUNNER_VERSION
#define HILT_RUNNER_VERSION "0.0.0"
#endif
#ifndef HILT_TVM_VERSION
#define HILT_TVM_VERSION "unknown"
#endif

#if defined(__x86_64__)
#define HILT_ARCH "x86_64"
#elif defined(__aarch64__)
#define HILT_ARCH "aarch64"
#elif defined(__riscv) && __riscv_xlen == 64
#define HILT_ARCH "riscv64"
#else
#define HILT_ARCH "unknown"
#endif

namespace {

namespace ffi = tvm::ffi;

constexpr size_t kMaxSamples = 1000000;

struct Options {
  std::string bundle;
  bool selftest = false;
  int warmup = 5;
  int min_iters = 10;
  double min_seconds = 1.0;
  int threads = 0;
  std::string dump_output;
  bool generate = false;     // greedy generation of a causal-LM bundle (prefill + decode)
  int prompt_tokens = -1;    // -1: the bundle's example prompt as it is
  int new_tokens = 16;
  std::string kernel;              // --time-kernel: a MetaSchedule candidate's shared library
  std::vector<std::string> kernel_args;  // its arguments, "dtype:d0xd1x..." each
  int number = 1;                  // calls per timed repeat (grown until a repeat lasts min_repeat_ms)
  int repeat = 3;
  double min_repeat_ms = 20.0;
};

/*! \brief A failure with its JSON error type and exit code. */
class RunnerError : public std::runtime_error {
 public:
  RunnerError(std::string type, const std::string& message, int exit_code)
      : std::runtime_error(message), type(std::move(type)), exit_code(exit_code) {}
  std::string type;
  int exit_code;
};

RunnerError Refuse(const std::string& type, const std::string& message) { return {type, message, 2}; }

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void PrintError(const RunnerError& err) {
  std::cout << "{\"ok\": false, \"error\": {\"type\": \"" << JsonEscape(err.type) << "\", \"message\": \""
            << JsonEscape(err.what()) << "\"}}" << std::endl;
}

int64_t ParseInt(const std::string& flag, const std::string& value) {
  try {
    size_t pos = 0;
    long long v = std::stoll(value, &pos);
    if (pos != value.size() || v < 0) throw std::invalid_argument(value);
    return v;
  } catch (const std::exception&) {
    throw RunnerError("usage", flag + " needs a non-negative integer, got '" + value + "'", 1);
  }
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw RunnerError("usage", arg + " needs a value", 1);
      return argv[++i];
    };
    if (arg == "--bundle") {
      opt.bundle = next();
    } else if (arg == "--selftest") {
      opt.selftest = true;
    } else if (arg == "--warmup") {
      opt.warmup = static_cast<int>(ParseInt(arg, next()));
    } else if (arg == "--min-iters") {
      opt.min_iters = static_cast<int>(ParseInt(arg, next()));
    } else if (arg == "--min-seconds") {
      std::string v = next();
      try {
        opt.min_seconds = std::stod(v);
      } catch (const std::exception&) {
        throw RunnerError("usage", "--min-seconds needs a number, got '" + v + "'", 1);
      }
    } else if (arg == "--threads") {
      opt.threads = static_cast<int>(ParseInt(arg, next()));
    } else if (arg == "--dump-output") {
      opt.dump_output = next();
    } else if (arg == "--generate") {
      opt.generate = true;
    } else if (arg == "--prompt-tokens") {
      opt.prompt_tokens = static_cast<int>(ParseInt(arg, next()));
      if (opt.prompt_tokens < 1) throw RunnerError("usage", "--prompt-tokens needs at least 1 token", 1);
    } else if (arg == "--time-kernel") {
      opt.kernel = next();
    } else if (arg == "--arg") {
      opt.kernel_args.push_back(next());
    } else if (arg == "--number") {
      opt.number = std::max(1, static_cast<int>(ParseInt(arg, next())));
    } else if (arg == "--repeat") {
      opt.repeat = std::max(1, static_cast<int>(ParseInt(arg, next())));
    } else if (arg == "--min-repeat-ms") {
      opt.min_repeat_ms = static_cast<double>(ParseInt(arg, next()));
    } else if (arg == "--new-tokens") {
      opt.new_tokens = static_cast<int>(ParseInt(arg, next()));
      if (opt.new_tokens < 1) throw RunnerError("usage", "--new-tokens needs at least 1 token", 1);
    } else {
      throw RunnerError("usage",
                        "unknown argument '" + arg +
                            "'; usage: hilt-runner (--bundle DIR | --selftest) [--warmup N] [--min-iters N] "
                            "[--min-seconds S] [--threads T] [--dump-output FILE] "
                            "[--generate [--prompt-tokens P] [--new-tokens G]] | hilt-runner --time-kernel "
                            "FILE.so [--arg DTYPE:SHAPE]... [--number N] [--repeat R] [--min-repeat-ms M]",
                        1);
    }
  }
  if (!opt.kernel.empty()) {
    if (opt.selftest || !opt.bundle.empty() || opt.generate) {
      throw RunnerError("usage", "--time-kernel times one kernel; it takes no --bundle, --selftest or --generate", 1);
    }
    return opt;
  }
  if (!opt.kernel_args.empty()) throw RunnerError("usage", "--arg belongs to --time-kernel", 1);
  if (opt.selftest == !opt.bundle.empty()) {
    throw RunnerError("usage", "give exactly one of --bundle DIR or --selftest", 1);
  }
  if (opt.generate && opt.selftest) throw RunnerError("usage", "--generate needs --bundle, not --selftest", 1);
  if (opt.min_iters < 1) opt.min_iters = 1;
  return opt;
}

/*! \brief Warm up, then time calls until both the iteration and the duration minimum are reached. */
std::vector<int64_t> Measure(const Options& opt, const std::function<void()>& fn) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < opt.warmup; ++i) fn();
  std::vector<int64_t> samples;
  samples.reserve(static_cast<size_t>(std::max(opt.min_iters, 1024)));
  const auto start = Clock::now();
  const auto min_duration = std::chrono::duration<double>(opt.min_seconds);
  while (samples.size() < kMaxSamples) {
    const auto t0 = Clock::now();
    fn();
    const auto t1 = Clock::now();
    samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    if (static_cast<int>(samples.size()) >= opt.min_iters && (t1 - start) >= min_duration) break;
  }
  return samples;
}

int64_t PeakRssKb() {
  // VmHWM is this process's own peak; getrusage's ru_maxrss survives exec, so a runner started by a
  // large parent (a test runner, a Python agent) would report the parent's peak instead
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return static_cast<int64_t>(usage.ru_maxrss);  // kilobytes on Linux
}

struct Result {
  std::vector<int64_t> samples;
  double checksum = 0.0;
  std::vector<int64_t> shape;
  int threads = 1;
};

void PrintResult(const Options& opt, const Result& r) {
  std::ostringstream os;
  os << "{\"ok\": true, \"runner_version\": \"" << HILT_RUNNER_VERSION << "\", \"tvm_version\": \""
     << HILT_TVM_VERSION << "\", \"warmup\": " << opt.warmup
     << ", \"samples_ns\": [";
  for (size_t i = 0; i < r.samples.size(); ++i) os << (i ? ", " : "") << r.samples[i];
  os << "], \"peak_rss_kb\": " << PeakRssKb() << ", \"output_checksum\": " << JsonNumber(r.checksum)
     << ", \"output_shape\": [";
  for (size_t i = 0; i < r.shape.size(); ++i) os << (i ? ", " : "") << r.shape[i];
  os << "], \"threads\": " << r.threads << "}";
  std::cout << os.str() << std::endl;
}

// ---------------------------------------------------------------- self-test

Result RunSelftest(const Options& opt) {
  constexpr int n = 128;
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (int i = 0; i < n * n; ++i) {
    a[i] = static_cast<float>((i % 17) - 8) / 8.0f;
    b[i] = static_cast<float>((i % 13) - 6) / 6.0f;
  }
  auto matmul = [&]() {
    for (int i = 0; i < n; ++i) {
      float* crow = &c[i * n];
      std::fill(crow, crow + n, 0.0f);
      for (int k = 0; k < n; ++k) {
        const float aik = a[i * n + k];
        const float* brow = &b[k * n];
        for (int j = 0; j < n; ++j) crow[j] += aik * brow[j];
      }
    }
  };
  Result r;
  r.samples = Measure(opt, matmul);
  for (float v : c) r.checksum += v;
  r.shape = {n, n};
  r.threads = 1;
  return r;
}

// ---------------------------------------------------------------- bundles

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Refuse("missing_file", "bundle file " + path + " is missing or unreadable");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool FileExists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return static_cast<bool>(in);
}

ffi::Map<ffi::Any, ffi::Any> ParseJsonObject(const std::string& path) {
  std::string text = ReadFile(path);
  ffi::String err;
  ffi::Any value = ffi::json::Parse(text, &err);
  if (!err.empty()) throw Refuse("bad_bundle", path + " is not valid JSON: " + std::string(err));
  auto obj = value.try_cast<ffi::Map<ffi::Any, ffi::Any>>();
  if (!obj.has_value()) throw Refuse("bad_bundle", path + " must hold a JSON object");
  return *obj;
}

std::string GetString(const ffi::Map<ffi::Any, ffi::Any>& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(ffi::String(key));
  if (it == obj.end()) throw Refuse("bad_bundle", where + " lacks \"" + key + "\"");
  auto s = (*it).second.try_cast<ffi::String>();
  if (!s.has_value()) throw Refuse("bad_bundle", where + " field \"" + key + "\" must be a string");
  return std::string(*s);
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsHexDigest(const std::string& s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

/*! \brief Check files, hashes and arch before anything is loaded; throws RunnerError (exit 2). */
void VerifyBundle(const std::string& dir) {
  const std::string meta_path = dir + "/metadata.json";
  if (!FileExists(meta_path)) throw Refuse("missing_file", "bundle " + dir + " has no metadata.json");
  auto meta = ParseJsonObject(meta_path);
  auto files_it = meta.find(ffi::String("files"));
  if (files_it == meta.end()) throw Refuse("bad_bundle", "metadata.json lacks \"files\"");
  auto files = (*files_it).second.try_cast<ffi::Map<ffi::Any, ffi::Any>>();
  if (!files.has_value()) throw Refuse("bad_bundle", "metadata.json \"files\" must be an object");

  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& kv : *files) {
    auto name = kv.first.try_cast<ffi::String>();
    auto digest = kv.second.try_cast<ffi::String>();
    if (!name.has_value() || !digest.has_value()) {
      throw Refuse("bad_bundle", "metadata.json \"files\" must map names to sha256 strings");
    }
    std::string n(*name);
    if (n.empty() || n.find('/') != std::string::npos || n == "metadata.json") {
      throw Refuse("bad_bundle", "metadata.json lists an invalid file name '" + n + "'");
    }
    entries.emplace_back(n, std::string(*digest));
  }
  for (const char* required : {"model.so", "input.json", "input.bin"}) {
    bool listed = std::any_of(entries.begin(), entries.end(), [&](const auto& e) { return e.first == required; });
    if (!listed) throw Refuse("bad_bundle", std::string("metadata.json does not list ") + required);
  }
  std::sort(entries.begin(), entries.end());
  std::string lines;
  for (const auto& [name, digest] : entries) {
    const std::string path = dir + "/" + name;
    if (!FileExists(path)) throw Refuse("missing_file", "bundle file " + name + " is missing from " + dir);
    std::string actual = hilt::Sha256File(path);
    if (actual != digest) {
      throw Refuse("hash_mismatch", "bundle file " + name + " has sha256 " + actual + ", metadata says " + digest);
    }
    lines += name + ":" + digest + "\n";
  }
  const std::string bundle_hash = hilt::Sha256String(lines);
  const std::string dir_name = BaseName(dir);
  if (IsHexDigest(dir_name) && dir_name != bundle_hash) {
    throw Refuse("hash_mismatch", "bundle directory is named " + dir_name + " but its contents hash to " + bundle_hash);
  }
  const std::string arch = GetString(meta, "arch", "metadata.json");
  if (arch != HILT_ARCH) {
    throw Refuse("wrong_arch", "bundle is built for " + arch + " but this runner is " + HILT_ARCH);
  }
}

DLDataType ParseDType(const std::string& name) {
  if (name == "int64") return DLDataType{kDLInt, 64, 1};
  if (name == "int32") return DLDataType{kDLInt, 32, 1};
  if (name == "float32") return DLDataType{kDLFloat, 32, 1};
  throw Refuse("bad_bundle", "input.json dtype '" + name + "' is not one of int64, int32, float32");
}

ffi::Tensor LoadInput(const std::string& dir) {
  auto spec = ParseJsonObject(dir + "/input.json");
  const DLDataType dtype = ParseDType(GetString(spec, "dtype", "input.json"));
  auto shape_it = spec.find(ffi::String("shape"));
  if (shape_it == spec.end()) throw Refuse("bad_bundle", "input.json lacks \"shape\"");
  auto shape_any = (*shape_it).second.try_cast<ffi::Array<ffi::Any>>();
  if (!shape_any.has_value()) throw Refuse("bad_bundle", "input.json \"shape\" must be a list");
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (const ffi::Any& d : *shape_any) {
    auto v = d.try_cast<int64_t>();
    if (!v.has_value() || *v < 0) throw Refuse("bad_bundle", "input.json \"shape\" must hold non-negative ints");
    shape.push_back(*v);
    numel *= *v;
  }
  const std::string data = ReadFile(dir + "/input.bin");
  const size_t nbytes = static_cast<size_t>(numel) * (dtype.bits / 8);
  if (data.size() != nbytes) {
    throw Refuse("bad_bundle", "input.bin has " + std::to_string(data.size()) + " bytes, input.json implies " +
                                   std::to_string(nbytes));
  }
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape(shape), dtype, cpu);
  std::memcpy(t.data_ptr(), data.data(), nbytes);
  return t;
}

ffi::Tensor FirstTensor(const ffi::Any& out) {
  if (auto t = out.try_cast<ffi::Tensor>()) return *t;
  if (auto arr = out.try_cast<ffi::Array<ffi::Any>>()) {
    if (!arr->empty()) return FirstTensor((*arr)[0]);
  }
  throw RunnerError("runtime", "model main returned no tensor", 3);
}

/*! \brief Whether the bundle was lowered on the blas matmul route (metadata tuning.matmul == "blas"). */
bool UsesBlas(const std::string& dir) {
  auto meta = ParseJsonObject(dir + "/metadata.json");
  auto tuning_it = meta.find(ffi::String("tuning"));
  if (tuning_it == meta.end()) return false;
  auto tuning = (*tuning_it).second.try_cast<ffi::Map<ffi::Any, ffi::Any>>();
  if (!tuning.has_value()) return false;
  auto route_it = tuning->find(ffi::String("matmul"));
  if (route_it == tuning->end()) return false;
  auto route = (*route_it).second.try_cast<ffi::String>();
  return route.has_value() && std::string(*route) == "blas";
}

/*! \brief Load libhilt_blas (beside this executable) for a blas-route bundle. Loaded only when a
 * bundle needs it, after OPENBLAS_NUM_THREADS is set: OpenBLAS starts its thread pool on load. */
void LoadBlas() {
  std::vector<char> exe(4096, '\0');
  ssize_t n = readlink("/proc/self/exe", exe.data(), exe.size() - 1);
  std::string dir = n > 0 ? std::string(exe.data(), static_cast<size_t>(n)) : std::string(".");
  dir = dir.substr(0, dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/'));
  const std::string path = (dir.empty() ? std::string(".") : dir) + "/libhilt_blas.so";
  if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* why = dlerror();
    throw Refuse("no_blas", "bundle uses the blas matmul route but this runtime cannot load " + path + " (" +
                                (why ? why : "unknown error") + "); rebuild the runtime with OpenBLAS or "
                                "recompile the bundle with --matmul tir");
  }
}

/*! \brief The bundle's Relax VM executable, loaded and initialised for the CPU (pooled allocator). */
ffi::Module LoadVm(const std::string& dir) {
  if (UsesBlas(dir)) LoadBlas();
  ffi::Module lib = ffi::Module::LoadFromFile(dir + "/model.so");
  auto load_exec = lib->GetFunction("vm_load_executable");
  if (!load_exec.has_value()) throw Refuse("bad_bundle", "model.so holds no Relax VM executable");
  ffi::Module exec = (*load_exec)().cast<ffi::Module>();
  auto init = exec->GetFunction("vm_initialization");
  if (!init.has_value()) throw RunnerError("runtime", "VM executable has no vm_initialization", 3);
  constexpr int kPooledAllocator = 2;
  (*init)(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  return exec;
}

void DumpFloats(const std::string& path, const float* values, size_t n) {
  std::ofstream dump(path, std::ios::binary);
  dump.write(reinterpret_cast<const char*>(values), static_cast<std::streamsize>(n * sizeof(float)));
  if (!dump) throw RunnerError("runtime", "cannot write " + path, 3);
}

/*! \brief The threads the TVM runtime actually uses (what was asked, if it cannot say). */
int RuntimeThreads(int asked) {
  if (auto num_threads = ffi::Function::GetGlobal("runtime.NumThreads")) return (*num_threads)().cast<int>();
  return asked;
}

// ---------------------------------------------------------------- weights outside the code

/*! \brief weights.bin mapped read-only; unmapped when the last tensor pointing into it is gone. */
struct Mapping {
  void* base = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (base != MAP_FAILED) munmap(base, size);
  }
};

/*! \brief An "allocator" that hands a tensor a slice of the mapping: no copy, pages read on first touch. */
struct MappedSlice {
  std::shared_ptr<Mapping> mapping;
  size_t offset;
  void AllocData(DLTensor* tensor) { tensor->data = static_cast<char*>(mapping->base) + offset; }
  void FreeData(DLTensor* tensor) { tensor->data = nullptr; }
};

DLDataType ParseWeightDType(const std::string& name) {
  if (name == "float32") return DLDataType{kDLFloat, 32, 1};
  if (name == "float16") return DLDataType{kDLFloat, 16, 1};
  if (name == "int8") return DLDataType{kDLInt, 8, 1};
  if (name == "uint8") return DLDataType{kDLUInt, 8, 1};
  if (name == "int32") return DLDataType{kDLInt, 32, 1};
  if (name == "int64") return DLDataType{kDLInt, 64, 1};
  throw Refuse("bad_bundle", "weights.json dtype '" + name + "' is not one the runner maps");
}

/*! \brief The bundle's weights (weights.json + weights.bin), in the order every function takes them
 * after its own inputs; none for a bundle that bakes them into model.so. */
std::vector<ffi::Tensor> LoadWeights(const std::string& dir) {
  std::vector<ffi::Tensor> weights;
  if (!FileExists(dir + "/weights.json")) return weights;
  auto spec = ParseJsonObject(dir + "/weights.json");
  auto it = spec.find(ffi::String("tensors"));
  auto list = it == spec.end() ? std::nullopt : (*it).second.try_cast<ffi::Array<ffi::Any>>();
  if (!list.has_value()) throw Refuse("bad_bundle", "weights.json lacks a \"tensors\" list");
  auto mapping = std::make_shared<Mapping>();
  const std::string path = dir + "/weights.bin";
  int fd = open(path.c_str(), O_RDONLY);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (fd >= 0) close(fd);
    throw Refuse("missing_file", "cannot open " + path);
  }
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size > 0) mapping->base = mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (mapping->size > 0 && mapping->base == MAP_FAILED) throw RunnerError("runtime", "cannot map " + path, 3);
  DLDevice cpu{kDLCPU, 0};
  for (const ffi::Any& entry : *list) {
    auto obj = entry.try_cast<ffi::Map<ffi::Any, ffi::Any>>();
    if (!obj.has_value()) throw Refuse("bad_bundle", "weights.json tensors must be objects");
    const DLDataType dtype = ParseWeightDType(GetString(*obj, "dtype", "weights.json"));
    auto shape_it = obj->find(ffi::String("shape"));
    auto dims = shape_it == obj->end() ? std::nullopt : (*shape_it).second.try_cast<ffi::Array<ffi::Any>>();
    if (!dims.has_value()) throw Refuse("bad_bundle", "weights.json tensor lacks a \"shape\" list");
    std::vector<int64_t> shape;
    size_t nbytes = dtype.bits / 8;
    for (const ffi::Any& d : *dims) {
      auto v = d.try_cast<int64_t>();
      if (!v.has_value() || *v < 0) throw Refuse("bad_bundle", "weights.json shapes must hold non-negative ints");
      shape.push_back(*v);
      nbytes *= static_cast<size_t>(*v);
    }
    auto off_it = obj->find(ffi::String("offset"));
    auto offset = off_it == obj->end() ? std::nullopt : (*off_it).second.try_cast<int64_t>();
    if (!offset.has_value() || *offset < 0 || *offset % 64 != 0 ||
        static_cast<size_t>(*offset) + nbytes > mapping->size) {
      throw Refuse("bad_bundle", "weights.json offset outside weights.bin or not 64-byte aligned");
    }
    weights.push_back(ffi::Tensor::FromNDAlloc(MappedSlice{mapping, static_cast<size_t>(*offset)},
                                               ffi::Shape(shape), dtype, cpu));
  }
  return weights;
}

/*! \brief Call a bundle function with its own arguments, then the weights. */
ffi::Any CallWithWeights(const ffi::Function& fn, std::vector<ffi::AnyView> args,
                         const std::vector<ffi::Tensor>& weights) {
  for (const auto& w : weights) args.emplace_back(w);
  ffi::Any rv;
  fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &rv);
  return rv;
}

Result RunBundle(const Options& opt) {
  VerifyBundle(opt.bundle);
  ffi::Tensor input = LoadInput(opt.bundle);
  try {
    ffi::Module exec = LoadVm(opt.bundle);
    auto main_fn = exec->GetFunction("main");
    if (!main_fn.has_value()) throw Refuse("bad_bundle", "model.so has no function \"main\"");
    ffi::Function fn = *main_fn;
    const std::vector<ffi::Tensor> weights = LoadWeights(opt.bundle);
    auto call = [&]() { return FirstTensor(CallWithWeights(fn, {input}, weights)); };

    ffi::Tensor output = call();
    Result r;
    r.samples = Measure(opt, [&]() { output = call(); });
    const DLTensor* out = output.GetDLTensorPtr();
    if (out->dtype.code != kDLFloat || out->dtype.bits != 32) {
      throw RunnerError("runtime", "model output is not float32", 3);
    }
    int64_t numel = 1;
    for (int i = 0; i < out->ndim; ++i) {
      r.shape.push_back(out->shape[i]);
      numel *= out->shape[i];
    }
    const float* values = static_cast<const float*>(out->data) + out->byte_offset / sizeof(float);
    for (int64_t i = 0; i < numel; ++i) r.checksum += values[i];
    if (!opt.dump_output.empty()) DumpFloats(opt.dump_output, values, static_cast<size_t>(numel));
    r.threads = RuntimeThreads(opt.threads);
    return r;
  } catch (const RunnerError&) {
    throw;
  } catch (const ffi::Error& e) {
    throw RunnerError("runtime", std::string(e.kind()) + ": " + e.message(), 3);
  }
}


// ---------------------------------------------------------------- causal LMs: greedy generation

struct CausalLayout {
  int64_t bucket = 0, max_len = 0, vocab = 0;
  std::vector<std::pair<int64_t, int64_t>> cache;  // per layer (kv_heads, head_dim)
};

int64_t GetInt(const ffi::Map<ffi::Any, ffi::Any>& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(ffi::String(key));
  if (it == obj.end()) throw Refuse("bad_bundle", where + " lacks \"" + key + "\"");
  auto v = (*it).second.try_cast<int64_t>();
  if (!v.has_value() || *v < 0) throw Refuse("bad_bundle", where + " field \"" + key + "\" must be an integer >= 0");
  return *v;
}

CausalLayout ReadCausal(const std::string& dir) {
  auto meta = ParseJsonObject(dir + "/metadata.json");
  auto it = meta.find(ffi::String("causal"));
  auto causal = it == meta.end() ? std::nullopt : (*it).second.try_cast<ffi::Map<ffi::Any, ffi::Any>>();
  if (!causal.has_value()) {
    throw Refuse("not_causal", "bundle is not a causal LM (no \"causal\" in metadata.json); --generate needs one");
  }
  CausalLayout layout;
  layout.bucket = GetInt(*causal, "bucket", "metadata.json causal");
  layout.max_len = GetInt(*causal, "max_len", "metadata.json causal");
  layout.vocab = GetInt(*causal, "vocab", "metadata.json causal");
  auto cache_it = causal->find(ffi::String("cache"));
  auto layers = cache_it == causal->end() ? std::nullopt : (*cache_it).second.try_cast<ffi::Array<ffi::Any>>();
  if (!layers.has_value() || layers->empty()) throw Refuse("bad_bundle", "metadata.json causal.cache must be a list");
  for (const ffi::Any& layer : *layers) {
    auto pair = layer.try_cast<ffi::Array<ffi::Any>>();
    if (!pair.has_value() || pair->size() != 2) throw Refuse("bad_bundle", "causal.cache entries are [kv_heads, head_dim]");
    auto kv = (*pair)[0].try_cast<int64_t>();
    auto hd = (*pair)[1].try_cast<int64_t>();
    if (!kv.has_value() || !hd.has_value() || *kv < 1 || *hd < 1) {
      throw Refuse("bad_bundle", "causal.cache entries must be positive integers");
    }
    layout.cache.emplace_back(*kv, *hd);
  }
  return layout;
}

ffi::Tensor IdsTensor(const std::vector<int64_t>& ids, int64_t length) {
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape({1, length}), DLDataType{kDLInt, 64, 1}, cpu);
  int64_t* data = static_cast<int64_t*>(t.data_ptr());
  std::fill(data, data + length, 0);
  std::copy(ids.begin(), ids.begin() + std::min<int64_t>(length, ids.size()), data);
  return t;
}

/*! \brief Index of the largest of `vocab` logits in row `row` of a float32 [1, T, vocab] output. */
int64_t ArgmaxRow(const ffi::Tensor& logits, int64_t row, int64_t vocab, std::vector<float>* keep) {
  const DLTensor* t = logits.GetDLTensorPtr();
  if (t->dtype.code != kDLFloat || t->dtype.bits != 32 || t->ndim != 3 || t->shape[2] != vocab) {
    throw RunnerError("runtime", "step logits are not float32 [1, T, vocab]", 3);
  }
  const float* v = static_cast<const float*>(t->data) + t->byte_offset / sizeof(float) + row * vocab;
  if (keep != nullptr) keep->insert(keep->end(), v, v + vocab);
  return std::max_element(v, v + vocab) - v;
}

struct Generation {
  int64_t ttft_ns = 0;
  std::vector<int64_t> decode_ns;
  std::vector<int64_t> ids;
  std::vector<float> logits;  // the logits each new id was picked from (kept for --dump-output)
};

struct GenerateResult {
  std::vector<Generation> runs;  // measured runs (after warm-up)
  int prompt_tokens = 0;
  int threads = 1;
};

ffi::Array<ffi::Any> CallStep(const ffi::Function& fn, const ffi::Tensor& ids, int64_t pos,
                               const std::vector<ffi::Tensor>& caches, const std::vector<ffi::Tensor>& weights) {
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor pos_t = tvm::runtime::Tensor::Empty(ffi::Shape({1}), DLDataType{kDLInt, 64, 1}, cpu);
  *static_cast<int64_t*>(pos_t.data_ptr()) = pos;
  std::vector<ffi::AnyView> args;
  args.reserve(caches.size() + 2);
  args.emplace_back(ids);
  args.emplace_back(pos_t);
  for (const auto& c : caches) args.emplace_back(c);
  ffi::Any rv = CallWithWeights(fn, std::move(args), weights);
  auto out = rv.try_cast<ffi::Array<ffi::Any>>();
  if (!out.has_value() || out->size() != caches.size() + 1) {
    throw RunnerError("runtime", "a step must return (logits, one K and one V cache per layer)", 3);
  }
  return *out;
}

GenerateResult RunGenerate(const Options& opt) {
  VerifyBundle(opt.bundle);
  const CausalLayout layout = ReadCausal(opt.bundle);
  ffi::Tensor example = LoadInput(opt.bundle);
  const DLTensor* ex = example.GetDLTensorPtr();
  if (ex->dtype.code != kDLInt || ex->dtype.bits != 64 || ex->ndim != 2 || ex->shape[1] < 1) {
    throw Refuse("bad_bundle", "a causal-LM bundle's input must be int64 token ids [1, n]");
  }
  const int64_t n = ex->shape[1];
  const int64_t prompt = opt.prompt_tokens < 0 ? n : opt.prompt_tokens;
  if (prompt > layout.bucket) {
    throw Refuse("too_long", "prompt of " + std::to_string(prompt) + " tokens is longer than the bundle allows (" +
                                 std::to_string(layout.bucket) + ")");
  }
  if (prompt + opt.new_tokens > layout.max_len) {
    throw Refuse("too_long", "prompt " + std::to_string(prompt) + " + " + std::to_string(opt.new_tokens) +
                                 " new tokens exceeds the KV cache of " + std::to_string(layout.max_len) +
                                 " positions");
  }
  std::vector<int64_t> prompt_ids(prompt);  // the example prompt, repeated to the length asked for
  const int64_t* src = static_cast<const int64_t*>(ex->data);
  for (int64_t i = 0; i < prompt; ++i) prompt_ids[i] = src[i % n];
  try {
    ffi::Module exec = LoadVm(opt.bundle);
    auto prefill_fn = exec->GetFunction("prefill");
    auto decode_fn = exec->GetFunction("decode");
    if (!prefill_fn.has_value() || !decode_fn.has_value()) {
      throw Refuse("bad_bundle", "model.so lacks the \"prefill\" and \"decode\" functions of a causal LM");
    }
    const std::vector<ffi::Tensor> weights = LoadWeights(opt.bundle);
    DLDevice cpu{kDLCPU, 0};
    std::vector<ffi::Tensor> empty;
    for (const auto& [kv, hd] : layout.cache) {
      for (int kind = 0; kind < 2; ++kind) {
        empty.push_back(tvm::runtime::Tensor::Empty(ffi::Shape({1, kv, layout.max_len, hd}), DLDataType{kDLFloat, 32, 1}, cpu));
      }
    }
    const ffi::Tensor padded = IdsTensor(prompt_ids, layout.bucket);
    const bool keep = !opt.dump_output.empty();
    using Clock = std::chrono::steady_clock;
    auto ns = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
    };
    auto generate = [&]() {
      Generation g;
      for (auto& c : empty) {  // a fresh cache: zeros, as the first prefill expects
        std::memset(c.data_ptr(), 0, ffi::GetDataSize(*c.GetDLTensorPtr()));
      }
      auto t0 = Clock::now();
      ffi::Array<ffi::Any> out = CallStep(*prefill_fn, padded, 0, empty, weights);
      g.ids.push_back(ArgmaxRow(out[0].cast<ffi::Tensor>(), prompt - 1, layout.vocab, keep ? &g.logits : nullptr));
      g.ttft_ns = ns(t0, Clock::now());
      std::vector<ffi::Tensor> caches;
      for (size_t i = 1; i < out.size(); ++i) caches.push_back(out[i].cast<ffi::Tensor>());
      for (int step = 1; step < opt.new_tokens; ++step) {
        auto t1 = Clock::now();
        ffi::Tensor last = IdsTensor({g.ids.back()}, 1);
        out = CallStep(*decode_fn, last, prompt + step - 1, caches, weights);
        g.ids.push_back(ArgmaxRow(out[0].cast<ffi::Tensor>(), 0, layout.vocab, keep ? &g.logits : nullptr));
        for (size_t i = 1; i < out.size(); ++i) caches[i - 1] = out[i].cast<ffi::Tensor>();
        g.decode_ns.push_back(ns(t1, Clock::now()));
      }
      return g;
    };
    for (int i = 0; i < opt.warmup; ++i) generate();
    GenerateResult r;
    r.prompt_tokens = static_cast<int>(prompt);
    const auto start = Clock::now();
    const auto min_duration = std::chrono::duration<double>(opt.min_seconds);
    do {
      r.runs.push_back(generate());
    } while (static_cast<int>(r.runs.size()) < opt.min_iters || (Clock::now() - start) < min_duration);
    if (keep) DumpFloats(opt.dump_output, r.runs.back().logits.data(), r.runs.back().logits.size());
    r.threads = RuntimeThreads(opt.threads);
    return r;
  } catch (const RunnerError&) {
    throw;
  } catch (const ffi::Error& e) {
    throw RunnerError("runtime", std::string(e.kind()) + ": " + e.message(), 3);
  }
}

void PrintGenerate(const Options& opt, const GenerateResult& r) {
  auto list = [](std::ostringstream& os, const std::vector<int64_t>& v) {
    os << "[";
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
    os << "]";
  };
  std::vector<int64_t> totals, ttft, decode;
  for (const auto& g : r.runs) {
    int64_t total = g.ttft_ns;
    for (int64_t d : g.decode_ns) total += d;
    totals.push_back(total);
    ttft.push_back(g.ttft_ns);
    decode.insert(decode.end(), g.decode_ns.begin(), g.decode_ns.end());
  }
  std::ostringstream os;
  os << "{\"ok\": true, \"mode\": \"generate\", \"runner_version\": \"" << HILT_RUNNER_VERSION
     << "\", \"tvm_version\": \"" << HILT_TVM_VERSION << "\", \"warmup\": " << opt.warmup << ", \"samples_ns\": ";
  list(os, totals);
  os << ", \"ttft_ns\": ";
  list(os, ttft);
  os << ", \"decode_ns\": ";
  list(os, decode);
  os << ", \"generated_ids\": ";
  list(os, r.runs.back().ids);
  os << ", \"prompt_tokens\": " << r.prompt_tokens << ", \"new_tokens\": " << opt.new_tokens
     << ", \"peak_rss_kb\": " << PeakRssKb() << ", \"threads\": " << r.threads << "}";
  std::cout << os.str() << std::endl;
}

// ---------------------------------------------------------------- one tuning candidate kernel

/*! \brief "float32:1x64x32" (or "int64:" for a scalar) -> a tensor filled like MetaSchedule's runner:
 * small random floats; integers zero, so index arguments (gathers) stay in bounds. */
ffi::Tensor KernelArgument(const std::string& spec, uint32_t* seed) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos) throw RunnerError("usage", "--arg '" + spec + "' is not DTYPE:SHAPE", 1);
  DLDataType dtype;
  try {
    dtype = ffi::StringToDLDataType(spec.substr(0, colon));
  } catch (const std::exception&) {
    throw RunnerError("usage", "--arg '" + spec + "': unknown dtype", 1);
  }
  std::vector<int64_t> shape;
  int64_t numel = 1;
  std::string dims = spec.substr(colon + 1);
  for (size_t start = 0; start < dims.size();) {
    size_t end = dims.find('x', start);
    if (end == std::string::npos) end = dims.size();
    shape.push_back(ParseInt("--arg " + spec, dims.substr(start, end - start)));
    numel *= shape.back();
    start = end + 1;
  }
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape(shape), dtype, cpu);
  const size_t nbytes = static_cast<size_t>(numel) * ((dtype.bits * dtype.lanes + 7) / 8);
  std::memset(t.data_ptr(), 0, nbytes);
  if (dtype.code == kDLFloat && dtype.bits == 32) {
    float* values = static_cast<float*>(t.data_ptr());
    for (int64_t i = 0; i < numel; ++i) {
      *seed = *seed * 1664525u + 1013904223u;
      values[i] = static_cast<float>(*seed >> 8) / static_cast<float>(1u << 24) - 0.5f;
    }
  }
  return t;
}

/*! \brief TVM's time evaluator, on the board: `number` calls per repeat, `number` grown until one
 * repeat lasts min_repeat_ms, then `repeat` repeats; the mean seconds per call of each. */
void TimeKernel(const Options& opt) {
  uint32_t seed = 1;
  std::vector<ffi::Any> args;  // a malformed argument is a usage error before anything loads
  for (const std::string& spec : opt.kernel_args) args.emplace_back(KernelArgument(spec, &seed));
  ffi::Module lib = [&]() {
    try {
      return ffi::Module::LoadFromFile(opt.kernel);
    } catch (const ffi::Error& e) {
      throw Refuse("bad_kernel", "cannot load " + opt.kernel + ": " + e.message());
    }
  }();
  auto main_fn = lib->GetFunction("main");
  if (!main_fn.has_value()) throw Refuse("bad_kernel", opt.kernel + " has no function \"main\"");
  std::vector<ffi::AnyView> views(args.begin(), args.end());
  ffi::Function fn = *main_fn;
  ffi::Any ignored;
  auto call = [&]() { fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &ignored); };
  using Clock = std::chrono::steady_clock;
  std::vector<double> run_secs;
  int number = opt.number;
  try {
    for (int i = 0; i < std::max(opt.warmup, 1); ++i) call();
    while (static_cast<int>(run_secs.size()) < opt.repeat) {
      const auto t0 = Clock::now();
      for (int i = 0; i < number; ++i) call();
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      if (run_secs.empty() && seconds * 1e3 < opt.min_repeat_ms && number < (1 << 24)) {
        const double per_call = std::max(seconds / number, 1e-9);
        number = std::max(static_cast<int>(opt.min_repeat_ms / 1e3 / per_call) + 1,
                          static_cast<int>(number * 1.618) + 1);
        continue;
      }
      run_secs.push_back(seconds / number);
    }
  } catch (const ffi::Error& e) {
    throw RunnerError("runtime", std::string(e.kind()) + ": " + e.message(), 3);
  }
  std::ostringstream os;
  os << "{\"ok\": true, \"mode\": \"kernel\", \"runner_version\": \"" << HILT_RUNNER_VERSION
     << "\", \"number\": " << number << ", \"run_secs\": [";
  for (size_t i = 0; i < run_secs.size(); ++i) os << (i ? ", " : "") << JsonNumber(run_secs[i]);
  os << "], \"threads\": " << RuntimeThreads(opt.threads) << "}";
  std::cout << os.str() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options opt = ParseArgs(argc, argv);
    if (opt.threads > 0) {
      setenv("TVM_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);
      // read by OpenBLAS when libhilt_blas loads; a value already in the environment wins
      setenv("OPENBLAS_NUM_THREADS", std::to_string(opt.threads).c_str(), 0);
    }
    if (!opt.kernel.empty()) {
      TimeKernel(opt);
      return 0;
    }
    if (opt.generate) {
      PrintGenerate(opt, RunGenerate(opt));
      return 0;
    }
    Result r = opt.selftest ? RunSelftest(opt) : RunBundle(opt);
    PrintResult(opt, r);
    return 0;
  } catch (const RunnerError& e) {
    PrintError(e);
    return e.exit_code;
  } catch (const std::exception& e) {
    PrintError(RunnerError("runtime", e.what(), 3));
    return 3;
  }
}
