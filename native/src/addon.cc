// Thin node-addon-api layer over the system libbpf and a few syscalls.
// Everything here is a direct call with typed errors (operation + errno);
// every decision lives in TypeScript (src/datapath).
#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace {

// libbpf's messages (the verifier log among them) of the call in progress,
// attached to the error so an operator sees why a load failed.
std::string g_libbpf_log;

int CollectLibbpfLog(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[4096];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (g_libbpf_log.size() < (1 << 20)) g_libbpf_log.append(buf);
  return n;
}

Napi::Error ErrnoError(Napi::Env env, const std::string &op, int err, const std::string &detail = "") {
  if (err < 0) err = -err;
  std::string msg = op + ": " + strerror(err);
  if (!detail.empty()) msg += " (" + detail + ")";
  if (!g_libbpf_log.empty()) msg += "\n" + g_libbpf_log;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("op", Napi::String::New(env, op));
  e.Set("errno", Napi::Number::New(env, err));
  const char *name = strerrorname_np(err);
  e.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  return e;
}

// Runs fn() on this thread inside the netns at `path`, then returns to the
// thread's own netns: fn's result and the errno it left. A thread that cannot
// return must not go on in the wrong namespace, so that aborts the process.
template <typename F>
static auto InNetns(Napi::Env env, const std::string &path, F fn) -> std::pair<decltype(fn()), int> {
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) throw ErrnoError(env, "open netns", errno, path);
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    int e = errno;
    close(target);
    throw ErrnoError(env, "open own netns", e);
  }
  if (setns(target, CLONE_NEWNET)) {
    int e = errno;
    close(target);
    close(self);
    throw ErrnoError(env, "setns", e, path);
  }
  auto result = fn();
  int e = errno;
  if (setns(self, CLONE_NEWNET)) abort();
  close(target);
  close(self);
  return {result, e};
}

int DupCloexec(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

int FdArg(const Napi::CallbackInfo &info, size_t i);

enum bpf_attach_type AttachType(Napi::Env env, const std::string &name) {
  if (name == "cgroup_sock_ops") return BPF_CGROUP_SOCK_OPS;
  if (name == "sk_msg_verdict") return BPF_SK_MSG_VERDICT;
  if (name == "cgroup_inet_ingress") return BPF_CGROUP_INET_INGRESS;
  throw Napi::TypeError::New(env, "unknown attach type: " + name);
}

// loadObject(path, maxEntries?) -> { maps: {name: fd}, progs: {name: fd} }
// Loads with libbpf (which sets each program's expected attach type from its
// SEC name), dups every fd so they outlive the object, then closes it.
// maxEntries ({map name: n}) sizes maps before they are created.
Napi::Value LoadObject(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  g_libbpf_log.clear();
  struct bpf_object *obj = bpf_object__open_file(path.c_str(), nullptr);
  int err = libbpf_get_error(obj);
  if (err) throw ErrnoError(env, "bpf_object__open_file", err, path);
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object sizes = info[1].As<Napi::Object>();
    Napi::Array names = sizes.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>();
      uint32_t n = sizes.Get(name).As<Napi::Number>().Uint32Value();
      struct bpf_map *m = bpf_object__find_map_by_name(obj, name.c_str());
      err = m ? bpf_map__set_max_entries(m, n) : -ENOENT;
      if (err) {
        bpf_object__close(obj);
        throw ErrnoError(env, "bpf_map__set_max_entries", err, name);
      }
    }
  }
  err = bpf_object__load(obj);
  if (err) {
    bpf_object__close(obj);
    throw ErrnoError(env, "bpf_object__load", err, path);
  }
  Napi::Object maps = Napi::Object::New(env);
  Napi::Object progs = Napi::Object::New(env);
  struct bpf_map *map;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    maps.Set(bpf_map__name(map), Napi::Number::New(env, DupCloexec(bpf_map__fd(map))));
  }
  struct bpf_program *prog;
  bpf_object__for_each_program(prog, obj) {
    progs.Set(bpf_program__name(prog), Napi::Number::New(env, DupCloexec(bpf_program__fd(prog))));
  }
  bpf_object__close(obj);
  g_libbpf_log.clear();
  Napi::Object out = Napi::Object::New(env);
  out.Set("maps", maps);
  out.Set("progs", progs);
  return out;
}

// iterLink(objPath, progName, reuse: {mapName: fd}) -> link fd of a BPF
// iterator. The object's maps named in `reuse` are the given (pinned) maps
// (bpf_map__reuse_fd before load), so the iterator reads another object's
// state; the object itself is closed once linked (the link holds the program).
Napi::Value IterLink(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString() || !info[2].IsObject()) {
    throw Napi::TypeError::New(env, "iterLink(objPath: string, progName: string, reuse: {map: fd})");
  }
  std::string path = info[0].As<Napi::String>();
  std::string prog_name = info[1].As<Napi::String>();
  Napi::Object reuse = info[2].As<Napi::Object>();
  g_libbpf_log.clear();
  struct bpf_object *obj = bpf_object__open_file(path.c_str(), nullptr);
  int err = libbpf_get_error(obj);
  if (err) throw ErrnoError(env, "bpf_object__open_file", err, path);
  Napi::Array names = reuse.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).As<Napi::String>();
    Napi::Value fdv = reuse.Get(name);
    struct bpf_map *map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map || !fdv.IsNumber()) {
      bpf_object__close(obj);
      throw ErrnoError(env, "bpf_object__find_map_by_name", ENOENT, name + " in " + path);
    }
    err = bpf_map__reuse_fd(map, fdv.As<Napi::Number>().Int32Value());
    if (err) {
      bpf_object__close(obj);
      throw ErrnoError(env, "bpf_map__reuse_fd", err, name);
    }
  }
  struct bpf_program *prog = bpf_object__find_program_by_name(obj, prog_name.c_str());
  if (!prog) {
    bpf_object__close(obj);
    throw ErrnoError(env, "bpf_object__find_program_by_name", ENOENT, prog_name + " in " + path);
  }
  err = bpf_object__load(obj);
  if (err) {
    bpf_object__close(obj);
    throw ErrnoError(env, "bpf_object__load", err, path);
  }
  int link = bpf_link_create(bpf_program__fd(prog), 0, BPF_TRACE_ITER, nullptr);
  int saved = errno;
  bpf_object__close(obj);
  if (link < 0) throw ErrnoError(env, "bpf_link_create(BPF_TRACE_ITER)", saved, prog_name);
  g_libbpf_log.clear();
  return Napi::Number::New(env, link);
}

// iterRead(linkFd, netnsPath | null) -> Buffer of everything the iterator
// writes. A netns-scoped iterator (iter/tcp) lists the netns it is created
// in: with a path, this thread enters that netns just for bpf_iter_create
// and returns (aborting if it cannot: nothing may run in the wrong netns).
Napi::Value IterRead(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int link = FdArg(info, 0);
  g_libbpf_log.clear();
  int iter;
  if (info[1].IsString()) {
    std::string path = info[1].As<Napi::String>();
    auto [fd, e] = InNetns(env, path, [&] { return bpf_iter_create(link); });
    iter = fd;
    if (iter < 0) throw ErrnoError(env, "bpf_iter_create", e, path);
  } else if (info[1].IsNull() || info[1].IsUndefined()) {
    iter = bpf_iter_create(link);
    if (iter < 0) throw ErrnoError(env, "bpf_iter_create", errno);
  } else {
    throw Napi::TypeError::New(env, "netns path must be a string or null");
  }
  std::vector<uint8_t> out;
  uint8_t buf[16384];
  for (;;) {
    ssize_t n = read(iter, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(iter);
      throw ErrnoError(env, "read(bpf iterator)", e);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  close(iter);
  return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
}

// The BTF of a compiled object (a path) or one the kernel holds (a BTF id, as
// a map's info names it: a pinned generation's own types).
struct btf *LoadBtf(Napi::Env env, const Napi::Value &src) {
  g_libbpf_log.clear();
  struct btf *btf;
  std::string what;
  if (src.IsNumber()) {
    uint32_t id = src.As<Napi::Number>().Uint32Value();
    what = "BTF id " + std::to_string(id);
    btf = btf__load_from_kernel_by_id(id);
  } else if (src.IsString()) {
    what = src.As<Napi::String>();
    btf = btf__parse_elf(what.c_str(), nullptr);
  } else {
    throw Napi::TypeError::New(env, "BTF source must be an object path or a kernel BTF id");
  }
  int err = libbpf_get_error(btf);
  if (err) throw ErrnoError(env, src.IsNumber() ? "btf__load_from_kernel_by_id" : "btf__parse_elf", err, what);
  return btf;
}

// structLayout(objPath | btfId, structName) -> { size, members: [{name, offset, size}] }
// Read from BTF without loading anything: the source of truth the TypeScript
// codecs are checked against.
Napi::Value StructLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string name = info[1].As<Napi::String>();
  struct btf *btf = LoadBtf(env, info[0]);
  int id = btf__find_by_name_kind(btf, name.c_str(), BTF_KIND_STRUCT);
  if (id < 0) {
    btf__free(btf);
    throw ErrnoError(env, "btf__find_by_name_kind", id, name);
  }
  const struct btf_type *t = btf__type_by_id(btf, id);
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", Napi::Number::New(env, t->size));
  Napi::Array members = Napi::Array::New(env);
  const struct btf_member *m = btf_members(t);
  for (unsigned i = 0; i < btf_vlen(t); i++, m++) {
    Napi::Object mo = Napi::Object::New(env);
    mo.Set("name", Napi::String::New(env, btf__name_by_offset(btf, m->name_off)));
    mo.Set("offset", Napi::Number::New(env, btf_member_bit_offset(t, i) / 8));
    mo.Set("size", Napi::Number::New(env, btf__resolve_size(btf, m->type)));
    members.Set(i, mo);
  }
  out.Set("members", members);
  btf__free(btf);
  return out;
}

// enumValues(objPath | btfId, enumName) -> [{name, value}] in declaration
// order, or null when that BTF has no such enum.
Napi::Value EnumValues(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string name = info[1].As<Napi::String>();
  struct btf *btf = LoadBtf(env, info[0]);
  int id = btf__find_by_name_kind(btf, name.c_str(), BTF_KIND_ENUM);
  if (id < 0) {
    btf__free(btf);
    return env.Null();
  }
  const struct btf_type *t = btf__type_by_id(btf, id);
  Napi::Array out = Napi::Array::New(env);
  const struct btf_enum *e = btf_enum(t);
  for (unsigned i = 0; i < btf_vlen(t); i++, e++) {
    Napi::Object v = Napi::Object::New(env);
    v.Set("name", Napi::String::New(env, btf__name_by_offset(btf, e->name_off)));
    v.Set("value", Napi::Number::New(env, btf_kflag(t) ? (double)(uint32_t)e->val : (double)e->val));
    out.Set(i, v);
  }
  btf__free(btf);
  return out;
}

Napi::Value ObjPin(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string path = info[1].As<Napi::String>();
  g_libbpf_log.clear();
  if (bpf_obj_pin(fd, path.c_str())) throw ErrnoError(info.Env(), "bpf_obj_pin", errno, path);
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  std::string path = info[0].As<Napi::String>();
  g_libbpf_log.clear();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) throw ErrnoError(info.Env(), "bpf_obj_get", errno, path);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// linkCgroup(progFd, cgroupPath, attachType) -> link fd
Napi::Value LinkCgroup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int prog = info[0].As<Napi::Number>().Int32Value();
  std::string path = info[1].As<Napi::String>();
  enum bpf_attach_type type = AttachType(env, info[2].As<Napi::String>());
  g_libbpf_log.clear();
  int cg = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) throw ErrnoError(env, "open cgroup", errno, path);
  int link = bpf_link_create(prog, cg, type, nullptr);
  int saved = errno;
  close(cg);
  if (link < 0) throw ErrnoError(env, "bpf_link_create", saved, path);
  return Napi::Number::New(env, link);
}

// progAttach(progFd, targetFd, attachType) / progDetach(...): sk_msg on a sockhash
Napi::Value ProgAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int prog = info[0].As<Napi::Number>().Int32Value();
  int target = info[1].As<Napi::Number>().Int32Value();
  enum bpf_attach_type type = AttachType(env, info[2].As<Napi::String>());
  g_libbpf_log.clear();
  if (bpf_prog_attach(prog, target, type, 0)) throw ErrnoError(env, "bpf_prog_attach", errno);
  return env.Undefined();
}

Napi::Value ProgDetach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int prog = info[0].As<Napi::Number>().Int32Value();
  int target = info[1].As<Napi::Number>().Int32Value();
  enum bpf_attach_type type = AttachType(env, info[2].As<Napi::String>());
  g_libbpf_log.clear();
  if (bpf_prog_detach2(prog, target, type)) throw ErrnoError(env, "bpf_prog_detach2", errno);
  return env.Undefined();
}

// progQuery(targetFd, attachType) -> [prog ids]; target: a cgroup dir fd or a map fd
Napi::Value ProgQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int target = info[0].As<Napi::Number>().Int32Value();
  enum bpf_attach_type type = AttachType(env, info[1].As<Napi::String>());
  __u32 ids[64];
  __u32 count = 64, flags = 0;
  g_libbpf_log.clear();
  if (bpf_prog_query(target, type, 0, &flags, ids, &count)) throw ErrnoError(env, "bpf_prog_query", errno);
  Napi::Array out = Napi::Array::New(env, count);
  for (__u32 i = 0; i < count; i++) out.Set(i, Napi::Number::New(env, ids[i]));
  return out;
}

Napi::Value OpenPath(const Napi::CallbackInfo &info) {
  std::string path = info[0].As<Napi::String>();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(info.Env(), "open", errno, path);
  return Napi::Number::New(info.Env(), fd);
}

// Map sizes come from the kernel, never from JavaScript: the kernel writes
// (lookup, next key) and reads (update, delete) exactly these many bytes, so a
// buffer of any other length is refused before the syscall.
struct MapSizes {
  std::string name;
  uint32_t key;
  uint32_t value;  // bytes one lookup writes: per-CPU maps hold one 8-aligned slot per possible CPU
  bool per_cpu;
};

bool IsPerCpuMap(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// bpf_obj_get_info_by_fd is what libbpf 1.2's bpf_map_get_info_by_fd wraps;
// Debian 12 ships libbpf 1.1.
struct bpf_map_info MapInfoOf(Napi::Env env, int fd, const std::string &op) {
  struct bpf_map_info mi = {};
  __u32 len = sizeof(mi);
  g_libbpf_log.clear();
  if (bpf_obj_get_info_by_fd(fd, &mi, &len))
    throw ErrnoError(env, op.empty() ? "bpf_obj_get_info_by_fd" : op + ": bpf_obj_get_info_by_fd", errno);
  return mi;
}

MapSizes SizesFrom(Napi::Env env, const struct bpf_map_info &mi, const std::string &op) {
  MapSizes s{mi.name, mi.key_size, mi.value_size, IsPerCpuMap(mi.type)};
  if (s.per_cpu) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus < 0) throw ErrnoError(env, op + ": libbpf_num_possible_cpus", cpus);
    s.value = ((mi.value_size + 7) / 8 * 8) * (uint32_t)cpus;
  }
  return s;
}

MapSizes SizesOf(Napi::Env env, int fd, const std::string &op) { return SizesFrom(env, MapInfoOf(env, fd, op), op); }

// A buffer whose length is not the map's: EINVAL, with what was expected.
Napi::Error SizeMismatch(Napi::Env env, const std::string &op, const MapSizes &m, const char *what,
                         uint32_t expected, size_t actual) {
  g_libbpf_log.clear();
  Napi::Error e = ErrnoError(env, op, EINVAL,
                             std::string(what) + " is " + std::to_string(actual) + " bytes, map " + m.name + " takes " +
                                 std::to_string(expected));
  Napi::Object mm = Napi::Object::New(env);
  mm.Set("what", Napi::String::New(env, what));
  mm.Set("map", Napi::String::New(env, m.name));
  mm.Set("expected", Napi::Number::New(env, expected));
  mm.Set("actual", Napi::Number::New(env, (double)actual));
  e.Set("sizeMismatch", mm);
  return e;
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (!info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

int FdArg(const Napi::CallbackInfo &info, size_t i) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "fd must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct bpf_prog_info pi = {};
  __u32 len = sizeof(pi);
  if (bpf_obj_get_info_by_fd(fd, &pi, &len)) throw ErrnoError(env, "bpf_obj_get_info_by_fd", errno);
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", pi.id);
  out.Set("type", pi.type);
  out.Set("name", Napi::String::New(env, pi.name));
  return out;
}

Napi::Value MapInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct bpf_map_info mi = MapInfoOf(env, fd, "");
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", mi.id);
  out.Set("type", mi.type);
  out.Set("name", Napi::String::New(env, mi.name));
  out.Set("keySize", mi.key_size);
  out.Set("valueSize", mi.value_size);
  out.Set("maxEntries", mi.max_entries);
  out.Set("btfId", mi.btf_id);
  out.Set("btfKeyTypeId", mi.btf_key_type_id);
  out.Set("btfValueTypeId", mi.btf_value_type_id);
  MapSizes m = SizesFrom(env, mi, "mapInfo");
  out.Set("perCpu", Napi::Boolean::New(env, m.per_cpu));
  out.Set("lookupSize", Napi::Number::New(env, m.value));
  return out;
}

Napi::Value LinkInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct bpf_link_info li = {};
  __u32 len = sizeof(li);
  if (bpf_obj_get_info_by_fd(fd, &li, &len)) throw ErrnoError(env, "bpf_obj_get_info_by_fd", errno);
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", li.id);
  out.Set("progId", li.prog_id);
  out.Set("type", li.type);
  if (li.type == BPF_LINK_TYPE_CGROUP) out.Set("cgroupId", Napi::BigInt::New(env, (uint64_t)li.cgroup.cgroup_id));
  return out;
}

Napi::Value LinkDetach(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (bpf_link_detach(fd)) throw ErrnoError(info.Env(), "bpf_link_detach", errno);
  return info.Env().Undefined();
}

// mapLookup(fd, key) -> Buffer of the map's value size (all CPUs' slots for a
// per-CPU map) | null on ENOENT
Napi::Value MapLookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Buffer<uint8_t> key = BufferArg(info, 1, "key");
  MapSizes m = SizesOf(env, fd, "bpf_map_lookup_elem");
  if (key.Length() != m.key) throw SizeMismatch(env, "bpf_map_lookup_elem", m, "key", m.key, key.Length());
  Napi::Buffer<uint8_t> val = Napi::Buffer<uint8_t>::New(env, m.value);
  if (bpf_map_lookup_elem(fd, key.Data(), val.Data())) {
    if (errno == ENOENT) return env.Null();
    throw ErrnoError(env, "bpf_map_lookup_elem", errno, m.name);
  }
  return val;
}

Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Buffer<uint8_t> key = BufferArg(info, 1, "key");
  Napi::Buffer<uint8_t> val = BufferArg(info, 2, "value");
  __u64 flags = info[3].As<Napi::Number>().Int64Value();
  MapSizes m = SizesOf(env, fd, "bpf_map_update_elem");
  if (key.Length() != m.key) throw SizeMismatch(env, "bpf_map_update_elem", m, "key", m.key, key.Length());
  if (val.Length() != m.value) throw SizeMismatch(env, "bpf_map_update_elem", m, "value", m.value, val.Length());
  if (bpf_map_update_elem(fd, key.Data(), val.Data(), flags)) throw ErrnoError(env, "bpf_map_update_elem", errno, m.name);
  return env.Undefined();
}

// mapDelete(fd, key) -> true if an entry was deleted, false if none existed
Napi::Value MapDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Buffer<uint8_t> key = BufferArg(info, 1, "key");
  MapSizes m = SizesOf(env, fd, "bpf_map_delete_elem");
  if (key.Length() != m.key) throw SizeMismatch(env, "bpf_map_delete_elem", m, "key", m.key, key.Length());
  if (bpf_map_delete_elem(fd, key.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    throw ErrnoError(env, "bpf_map_delete_elem", errno, m.name);
  }
  return Napi::Boolean::New(env, true);
}

// mapNextKey(fd, key | null) -> Buffer of the map's key size | null at the end
Napi::Value MapNextKey(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  MapSizes m = SizesOf(env, fd, "bpf_map_get_next_key");
  const void *cur = nullptr;
  if (!info[1].IsNull()) {
    Napi::Buffer<uint8_t> key = BufferArg(info, 1, "key");
    if (key.Length() != m.key) throw SizeMismatch(env, "bpf_map_get_next_key", m, "key", m.key, key.Length());
    cur = key.Data();
  }
  Napi::Buffer<uint8_t> next = Napi::Buffer<uint8_t>::New(env, m.key);
  if (bpf_map_get_next_key(fd, cur, next.Data())) {
    if (errno == ENOENT) return env.Null();
    throw ErrnoError(env, "bpf_map_get_next_key", errno, m.name);
  }
  return next;
}

// mapKeyCount(fd) -> number of keys, walked with one syscall per key (a
// metric's cost: no Buffer per key). A key deleted under the walk restarts a
// hash map's walk, so the count stops at max_entries.
Napi::Value MapKeyCount(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  struct bpf_map_info mi = MapInfoOf(env, fd, "bpf_map_get_next_key");
  MapSizes m = SizesFrom(env, mi, "bpf_map_get_next_key");
  std::vector<uint8_t> a(m.key), b(m.key);
  uint8_t *cur = nullptr, *next = a.data();
  uint32_t n = 0;
  while (n < mi.max_entries) {
    if (bpf_map_get_next_key(fd, cur, next)) {
      if (errno == ENOENT) break;
      throw ErrnoError(env, "bpf_map_get_next_key", errno, m.name);
    }
    n++;
    cur = next;
    next = cur == a.data() ? b.data() : a.data();
  }
  return Napi::Number::New(env, n);
}

Napi::Value PossibleCpus(const Napi::CallbackInfo &info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) throw ErrnoError(info.Env(), "libbpf_num_possible_cpus", n);
  return Napi::Number::New(info.Env(), n);
}

// netnsCookie(nsPath) -> bigint. Enters the netns on this thread just long
// enough to open a socket there, then returns; if it cannot return, the
// process must not go on in the wrong namespace.
Napi::Value NetnsCookie(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  auto [sock, sock_err] = InNetns(env, path, [] { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); });
  if (sock < 0) throw ErrnoError(env, "socket in netns", sock_err, path);
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  int rc = getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int e = errno;
  close(sock);
  if (rc) throw ErrnoError(env, "getsockopt(SO_NETNS_COOKIE)", e);
  return Napi::BigInt::New(env, cookie);
}

// netnsAddresses(nsPath) -> [address] of every interface there (getifaddrs:
// its netlink socket is made in the netns this thread entered), as
// inet_ntop writes them. Returns to the agent's netns as NetnsCookie does.
Napi::Value NetnsAddresses(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  struct ifaddrs *ifa = nullptr;
  auto [rc, ifa_err] = InNetns(env, path, [&] { return getifaddrs(&ifa); });
  if (rc) throw ErrnoError(env, "getifaddrs in netns", ifa_err, path);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    char buf[INET6_ADDRSTRLEN];
    const void *a = nullptr;
    if (i->ifa_addr->sa_family == AF_INET) a = &((struct sockaddr_in *)i->ifa_addr)->sin_addr;
    else if (i->ifa_addr->sa_family == AF_INET6) a = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
    if (a && inet_ntop(i->ifa_addr->sa_family, a, buf, sizeof buf)) out.Set(n++, Napi::String::New(env, buf));
  }
  freeifaddrs(ifa);
  return out;
}

Napi::Value MountBpffs(const Napi::CallbackInfo &info) {
  std::string path = info[0].As<Napi::String>();
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700")) throw ErrnoError(info.Env(), "mount bpffs", errno, path);
  return info.Env().Undefined();
}

// Socket syscalls the self-test needs and Node does not expose.
// fionread(fd) -> bytes the kernel would return to read() now
Napi::Value Fionread(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int n = 0;
  if (ioctl(fd, FIONREAD, &n)) throw ErrnoError(info.Env(), "ioctl(FIONREAD)", errno);
  return Napi::Number::New(info.Env(), n);
}

// recvDontwait(fd, len, peek) -> Buffer (MSG_DONTWAIT, and MSG_PEEK when
// asked; empty when nothing is queued)
Napi::Value RecvDontwait(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  size_t len = info[1].As<Napi::Number>().Uint32Value();
  bool peek = info[2].As<Napi::Boolean>().Value();
  std::vector<uint8_t> buf(len);
  ssize_t n = recv(fd, buf.data(), len, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Buffer<uint8_t>::Copy(env, buf.data(), 0);
    throw ErrnoError(env, peek ? "recv(MSG_PEEK)" : "recv", errno);
  }
  return Napi::Buffer<uint8_t>::Copy(env, buf.data(), n);
}

// connectBlocking(ipv4, port) -> fd of a blocking TCP socket connected there
// (the self-test's blocking reader: Node's own sockets are all non-blocking)
Napi::Value ConnectBlocking(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string ip = info[0].As<Napi::String>().Utf8Value();
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)info[1].As<Napi::Number>().Uint32Value());
  if (inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) throw ErrnoError(env, "inet_pton", EINVAL, ip);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, "socket", errno);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "connect", err);
  }
  return Napi::Number::New(env, fd);
}

// spliceCount(fd, len) -> bytes splice(2) takes from the socket into a pipe
// without waiting (then discarded), or -1 when it says EAGAIN
Napi::Value SpliceCount(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  size_t len = info[1].As<Napi::Number>().Uint32Value();
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK)) throw ErrnoError(env, "pipe2", errno);
  ssize_t n = splice(fd, NULL, p[1], NULL, len, SPLICE_F_NONBLOCK);
  int err = errno;
  close(p[0]);
  close(p[1]);
  if (n < 0) {
    if (err == EAGAIN) return Napi::Number::New(env, -1);
    throw ErrnoError(env, "splice", err);
  }
  return Napi::Number::New(env, (double)n);
}

// sendDontwait(fd, buf) -> bytes accepted, or -1 when the kernel says EAGAIN
Napi::Value SendDontwait(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
  ssize_t n = send(fd, b.Data(), b.Length(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), -1);
    throw ErrnoError(info.Env(), "send", errno);
  }
  return Napi::Number::New(info.Env(), (double)n);
}

Napi::Value SetsockoptInt(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int level = info[1].As<Napi::Number>().Int32Value();
  int name = info[2].As<Napi::Number>().Int32Value();
  int v = info[3].As<Napi::Number>().Int32Value();
  if (setsockopt(fd, level, name, &v, sizeof(v))) throw ErrnoError(info.Env(), "setsockopt", errno);
  return info.Env().Undefined();
}

Napi::Value GetsockoptInt(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int level = info[1].As<Napi::Number>().Int32Value();
  int name = info[2].As<Napi::Number>().Int32Value();
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, name, &v, &len)) throw ErrnoError(info.Env(), "getsockopt", errno);
  return Napi::Number::New(info.Env(), v);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("fionread", Napi::Function::New(env, Fionread));
  exports.Set("connectBlocking", Napi::Function::New(env, ConnectBlocking));
  exports.Set("spliceCount", Napi::Function::New(env, SpliceCount));
  exports.Set("recvDontwait", Napi::Function::New(env, RecvDontwait));
  exports.Set("sendDontwait", Napi::Function::New(env, SendDontwait));
  exports.Set("setsockoptInt", Napi::Function::New(env, SetsockoptInt));
  exports.Set("getsockoptInt", Napi::Function::New(env, GetsockoptInt));
  libbpf_set_print(CollectLibbpfLog);
  exports.Set("loadObject", Napi::Function::New(env, LoadObject));
  exports.Set("iterLink", Napi::Function::New(env, IterLink));
  exports.Set("iterRead", Napi::Function::New(env, IterRead));
  exports.Set("structLayout", Napi::Function::New(env, StructLayout));
  exports.Set("enumValues", Napi::Function::New(env, EnumValues));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("openPath", Napi::Function::New(env, OpenPath));
  exports.Set("linkCgroup", Napi::Function::New(env, LinkCgroup));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach));
  exports.Set("progAttach", Napi::Function::New(env, ProgAttach));
  exports.Set("progDetach", Napi::Function::New(env, ProgDetach));
  exports.Set("progQuery", Napi::Function::New(env, ProgQuery));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapNextKey", Napi::Function::New(env, MapNextKey));
  exports.Set("mapKeyCount", Napi::Function::New(env, MapKeyCount));
  exports.Set("possibleCpus", Napi::Function::New(env, PossibleCpus));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie));
  exports.Set("netnsAddresses", Napi::Function::New(env, NetnsAddresses));
  exports.Set("mountBpffs", Napi::Function::New(env, MountBpffs));
  return exports;
}

}  // namespace

NODE_API_MODULE(sidecar_accel_native, Init)
