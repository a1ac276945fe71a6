// L2 test program of the nested harness (tests/nested/run.sh), run by the L2 /init as root
// after the edu device has been bound to vfio-pci. Every line it prints starts with "L2-"; the
// last one is "L2-TEST-RESULT PASS" or "L2-TEST-RESULT FAIL <what>".
//
// Steps: VFIO type1 container + group + device; edu identification and liveness; MSI through
// an eventfd; map a source and a destination buffer, DMA RAM -> edu -> RAM through the vIOMMU
// and compare; unmap the destination and check that a DMA to it is blocked (the fault itself
// is reported by the L2 kernel's IOMMU driver in dmesg, which /init prints); map single pages
// until VFIO refuses (its dma_entry_limit), timing the maps, then unmap everything.
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what) {
  printf("L2-TEST-RESULT FAIL %s (errno %d %s)\n", what, errno, strerror(errno));
  fflush(stdout);
  exit(1);
}
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int dev;
static uint64_t bar0, cfg;

static uint32_t rd32(uint64_t off) {
  uint32_t v = 0;
  if (pread(dev, &v, 4, bar0 + off) != 4) fail("edu register read");
  return v;
}
static void wr32(uint64_t off, uint32_t v) {
  if (pwrite(dev, &v, 4, bar0 + off) != 4) fail("edu register write");
}
static void wr64(uint64_t off, uint64_t v) {
  if (pwrite(dev, &v, 8, bar0 + off) != 8) fail("edu register write (64-bit)");
}
static uint64_t rd64(uint64_t off) {
  uint64_t v = 0;
  if (pread(dev, &v, 8, bar0 + off) != 8) fail("edu register read (64-bit)");
  return v;
}

// One edu DMA of n bytes; returns when the run bit clears.
static void edu_dma(uint64_t src, uint64_t dst, uint64_t n, int to_ram) {
  wr64(0x80, src);
  wr64(0x88, dst);
  wr64(0x90, n);
  wr64(0x98, 1 | (to_ram ? 2 : 0));
  for (int i = 0; i < 100000; i++)
    if (!(rd64(0x98) & 1)) return;
  fail("edu DMA did not complete");
}

static int map(int c, void *va, uint64_t iova, uint64_t size, uint32_t flags) {
  struct vfio_iommu_type1_dma_map m = {.argsz = sizeof m, .flags = flags, .vaddr = (uintptr_t)va,
                                       .iova = iova, .size = size};
  return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}
static int unmap(int c, uint64_t iova, uint64_t size, uint32_t flags, uint64_t *out) {
  struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof u, .flags = flags, .iova = iova, .size = size};
  int r = ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);
  if (out) *out = u.size;
  return r;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: l2test BDF GROUP [max_pages]\n");
    return 2;
  }
  const char *bdf = argv[1];
  int max_pages = argc > 3 ? atoi(argv[3]) : 1100;
  setvbuf(stdout, NULL, _IOLBF, 0);

  int c = open("/dev/vfio/vfio", O_RDWR);
  if (c < 0) fail("open /dev/vfio/vfio");
  if (ioctl(c, VFIO_GET_API_VERSION) != VFIO_API_VERSION) fail("VFIO API version");
  int type = ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU;
  char path[64];
  snprintf(path, sizeof path, "/dev/vfio/%s", argv[2]);
  int g = open(path, O_RDWR);
  if (g < 0) fail("open the VFIO group");
  struct vfio_group_status gs = {.argsz = sizeof gs};
  if (ioctl(g, VFIO_GROUP_GET_STATUS, &gs) || !(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) fail("group not viable");
  if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &c)) fail("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(c, VFIO_SET_IOMMU, type)) fail("VFIO_SET_IOMMU");
  dev = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (dev < 0) fail("VFIO_GROUP_GET_DEVICE_FD");
  struct vfio_region_info ri = {.argsz = sizeof ri, .index = VFIO_PCI_BAR0_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &ri)) fail("BAR0 region info");
  bar0 = ri.offset;
  struct vfio_region_info ci = {.argsz = sizeof ci, .index = VFIO_PCI_CONFIG_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &ci)) fail("config region info");
  cfg = ci.offset;
  printf("L2-VFIO container type=%s group=%s device=%s bar0_size=0x%llx\n",
         type == VFIO_TYPE1v2_IOMMU ? "type1v2" : "type1", argv[2], bdf, (unsigned long long)ri.size);

  // Bus mastering (vfio-pci enables memory decoding, not DMA).
  uint16_t cmd;
  if (pread(dev, &cmd, 2, cfg + 4) != 2) fail("read command register");
  cmd |= 0x6;
  if (pwrite(dev, &cmd, 2, cfg + 4) != 2) fail("write command register");

  uint32_t id = rd32(0x00);
  wr32(0x04, 0x12345678);
  uint32_t live = rd32(0x04);
  printf("L2-EDU id=0x%08x liveness=0x%08x\n", id, live);
  if (id != 0x010000ed || live != ~0x12345678u) fail("edu identification / liveness");

  // MSI through an eventfd.
  int efd = eventfd(0, EFD_NONBLOCK);
  char irqbuf[sizeof(struct vfio_irq_set) + sizeof(int)];
  struct vfio_irq_set *is = (struct vfio_irq_set *)irqbuf;
  is->argsz = sizeof irqbuf;
  is->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  is->index = VFIO_PCI_MSI_IRQ_INDEX;
  is->start = 0;
  is->count = 1;
  memcpy(is->data, &efd, sizeof(int));
  if (ioctl(dev, VFIO_DEVICE_SET_IRQS, is)) fail("VFIO_DEVICE_SET_IRQS (MSI)");
  wr32(0x60, 0x1);
  struct pollfd pf = {.fd = efd, .events = POLLIN};
  int pr = poll(&pf, 1, 2000);
  uint64_t cnt = 0;
  if (pr == 1) (void)!read(efd, &cnt, 8);
  printf("L2-MSI irq_status=0x%x eventfd=%llu\n", rd32(0x24), (unsigned long long)cnt);
  // While the MSI is set up: how L2 delivers it (IR-PCI-MSI when remapped) and the
  // IO-APIC's interrupts (IR-IO-APIC when remapped).
  FILE *pi = fopen("/proc/interrupts", "r");
  char line[512];
  while (pi && fgets(line, sizeof line, pi)) {
    if (strstr(line, "vfio") || strstr(line, "IO-APIC")) {
      line[strcspn(line, "\n")] = 0;
      printf("L2-INTR %s\n", line);
    }
  }
  if (pi) fclose(pi);
  wr32(0x64, 0x1);
  if (pr != 1 || cnt < 1) fail("edu MSI did not arrive");

  // DMA through the vIOMMU.
  const uint64_t SRC = 0x100000, DST = 0x200000, N = 4096;
  uint8_t *src = mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint8_t *dst = mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (uint64_t i = 0; i < N; i++) src[i] = (uint8_t)(i * 7 + 3);
  memset(dst, 0, N);
  if (map(c, src, SRC, N, VFIO_DMA_MAP_FLAG_READ)) fail("MAP_DMA src");
  if (map(c, dst, DST, N, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) fail("MAP_DMA dst");
  edu_dma(SRC, 0x40000, N, 0);
  edu_dma(0x40000, DST, N, 1);
  int same = memcmp(src, dst, N) == 0;
  printf("L2-DMA-VERIFY %s: %llu bytes RAM(iova 0x%llx) -> edu -> RAM(iova 0x%llx)\n", same ? "OK" : "MISMATCH",
         (unsigned long long)N, (unsigned long long)SRC, (unsigned long long)DST);
  if (!same) fail("DMA data mismatch");

  // Unmap the destination: the next DMA to it must be blocked.
  uint64_t got = 0;
  if (unmap(c, DST, N, 0, &got) || got != N) fail("UNMAP_DMA dst");
  memset(dst, 0, N);
  edu_dma(0x40000, DST, N, 1);
  int untouched = 1;
  for (uint64_t i = 0; i < N; i++) untouched &= dst[i] == 0;
  printf("L2-UNMAPPED-DMA %s (dst buffer %s)\n", untouched ? "BLOCKED" : "NOT-BLOCKED",
         untouched ? "untouched" : "written");
  if (!untouched) fail("DMA to an unmapped IOVA reached memory");

  // Fill VFIO's DMA entry limit one page at a time.
  uint8_t *pages = mmap(NULL, (size_t)max_pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) fail("mmap pages");
  memset(pages, 1, (size_t)max_pages * 4096);
  // Below 2^28: the edu device clamps DMA addresses to its 28-bit dma_mask (as QEMU's does).
  const uint64_t BASE = 0x1000000;
  int n = 0, err = 0;
  double t0 = now();
  for (; n < max_pages; n++) {
    // Every other page of the buffer: no two mappings are contiguous in guest memory.
    if (map(c, pages + (size_t)n * 4096, BASE + (uint64_t)n * 2 * 4096, 4096,
            VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) {
      err = errno;
      break;
    }
  }
  double t1 = now();
  printf("L2-LIMIT mapped %d pages, then %s (errno %d) (%.1f us/map)\n", n, err ? strerror(err) : "stopped", err,
         n ? (t1 - t0) * 1e6 / n : 0.0);
  // The last mapped page still works through the vIOMMU.
  if (n > 0) {
    edu_dma(BASE + (uint64_t)(n - 1) * 2 * 4096, 0x40000, 64, 0);
    printf("L2-LIMIT DMA from the last mapped page done\n");
  }
  if (unmap(c, BASE, (uint64_t)max_pages * 2 * 4096, 0, &got)) fail("UNMAP_DMA of the limit pages");
  double t2 = now();
  printf("L2-LIMIT unmapped %llu bytes in %.3f s\n", (unsigned long long)got, t2 - t1);
  if (unmap(c, SRC, N, 0, &got)) fail("UNMAP_DMA src");
  close(dev);
  close(g);
  close(c);
  printf("L2-TEST-RESULT PASS\n");
  return 0;
}
