// prog_info: prints what the kernel says about pinned BPF programs, one line each:
//
//   NAME TYPE verified_insns=N xlated_insns=N jited_bytes=N
//
// bpftool 7.1 (Debian bookworm) does not show bpf_prog_info.verified_insns, the number of
// instructions the verifier processed (kernel >= 5.16), so vmtest/run builds this on the host and
// vmtest/guest.sh runs it in the guest on the programs `bpftool prog loadall` pinned.
// Raw bpf(2) with the UAPI header only: no libbpf, so it runs on any kernel the guest boots.
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr* attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

static const char* type_name(uint32_t type) {
  switch (type) {
    case BPF_PROG_TYPE_XDP: return "xdp";
    case BPF_PROG_TYPE_SCHED_CLS: return "sched_cls";
    case BPF_PROG_TYPE_SCHED_ACT: return "sched_act";
    case BPF_PROG_TYPE_SOCKET_FILTER: return "socket_filter";
    case BPF_PROG_TYPE_CGROUP_SKB: return "cgroup_skb";
    default: return NULL;
  }
}

int main(int argc, char** argv) {
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.pathname = (uint64_t)(uintptr_t)argv[i];
    int fd = (int)sys_bpf(BPF_OBJ_GET, &attr);
    if (fd < 0) {
      fprintf(stderr, "prog_info: %s: BPF_OBJ_GET: %s\n", argv[i], strerror(errno));
      rc = 1;
      continue;
    }
    struct bpf_prog_info info;
    memset(&info, 0, sizeof(info));
    memset(&attr, 0, sizeof(attr));
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = sizeof(info);
    attr.info.info = (uint64_t)(uintptr_t)&info;
    if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0) {
      fprintf(stderr, "prog_info: %s: BPF_OBJ_GET_INFO_BY_FD: %s\n", argv[i], strerror(errno));
      close(fd);
      rc = 1;
      continue;
    }
    // The kernel fills only the fields it knows; verified_insns is 0 before 5.16.
    int has_verified = attr.info.info_len >= __builtin_offsetof(struct bpf_prog_info, verified_insns) + sizeof(info.verified_insns) &&
                       info.verified_insns != 0;
    const char* tn = type_name(info.type);
    char type_buf[16];
    if (tn == NULL) {
      snprintf(type_buf, sizeof(type_buf), "type%u", info.type);
      tn = type_buf;
    }
    char verified_buf[16] = "n/a";
    if (has_verified) snprintf(verified_buf, sizeof(verified_buf), "%u", info.verified_insns);
    printf("%.*s %s verified_insns=%s xlated_insns=%u jited_bytes=%u\n", (int)sizeof(info.name), info.name,
           tn, verified_buf, info.xlated_prog_len / 8, info.jited_prog_len);
    close(fd);
  }
  return rc;
}
