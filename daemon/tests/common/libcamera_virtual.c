/*
 * What libcamera's virtual camera needs to run here, preloaded into the process that uses it.
 *
 * libcamera's virtual pipeline handler is a camera that sends a configured image. Two things
 * stand between it and a test on a virtual machine:
 *
 * 1. It allocates frame buffers from a dma-buf provider, a DMA heap or /dev/udmabuf, and virtual
 *    machines often have neither. This library makes /dev/udmabuf exist: opening it gives a
 *    handle, and UDMABUF_CREATE on that handle returns a duplicate of the memfd it is given, which
 *    is what a udmabuf is (the memfd's pages as a buffer). libcamera and GStreamer's libcamerasrc
 *    fill, map and pass those buffers exactly as they would kernel ones. DMA_BUF_IOCTL_SYNC and
 *    DMA_BUF_SET_NAME on such a buffer (a sealed memfd: udmabuf requires F_SEAL_SHRINK) succeed
 *    with nothing to do, since memory within one process is coherent.
 *
 * 2. It is not a sensor. It fills a request's buffers on its own thread, in a loop over that
 *    request's buffer map, and each filled buffer is handed to the camera manager's thread, which
 *    may complete the request (and libcamerasrc then reuse or free it) while that loop still walks
 *    the map: the camera thread then reads freed memory and crashes, within seconds when frames
 *    are asked for as fast as they come (libcamera 0.4 to 0.7). A sensor fills buffers by DMA
 *    and reports them from an interrupt, never from inside such a loop, and at its frame rate.
 *    So here the process runs on one CPU and the camera thread at real-time priority: nothing
 *    else in the process runs until it is back waiting in its event loop (ppoll). And it maps each
 *    buffer to fill it only at the next frame time, LOOKOUT_VIRTUAL_CAMERA_FPS frames a second
 *    (default 10), as a sensor would expose it.
 *    Real-time priority needs CAP_SYS_NICE; without it the library refuses to pretend and
 *    aborts the process.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/udmabuf.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define UDMABUF_PATH "/dev/udmabuf"

/* The descriptors opened on /dev/udmabuf are descriptors of /dev/null marked here. */
#define MAX_FDS 4096
static volatile char is_udmabuf[MAX_FDS];

/*
 * The functions this library wraps, looked up once before anything runs. Looking them up on each
 * call would take the dynamic loader's lock in close(), and libraries whose constructors start
 * threads that close descriptors (liblttng-ust, linked by libcamera) then deadlock at dlopen.
 */
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);

__attribute__((constructor)) static void find_real_functions(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_ioctl = dlsym(RTLD_NEXT, "ioctl");
    real_ppoll = dlsym(RTLD_NEXT, "ppoll");
    real_mmap = dlsym(RTLD_NEXT, "mmap");

    /* One CPU for the whole process: every thread started from now on inherits it. */
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (CPU_ISSET(cpu, &cpus)) {
                CPU_ZERO(&cpus);
                CPU_SET(cpu, &cpus);
                sched_setaffinity(0, sizeof cpus, &cpus);
                break;
            }
        }
    }
}

static int is_handle(int fd) { return fd >= 0 && fd < MAX_FDS && is_udmabuf[fd]; }

static int open_handle(int flags) {
    int fd = real_open("/dev/null", O_RDWR | (flags & O_CLOEXEC));
    if (fd >= MAX_FDS) {
        close(fd);
        errno = EMFILE;
        return -1;
    }
    if (fd >= 0)
        is_udmabuf[fd] = 1;
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

#define OPEN_AT(name)                                                                          \
    int name(int dirfd, const char *path, int flags, ...) {                                    \
        va_list ap;                                                                            \
        va_start(ap, flags);                                                                   \
        mode_t mode = mode_arg(flags, ap);                                                     \
        va_end(ap);                                                                            \
        if (strcmp(path, UDMABUF_PATH) == 0)                                                   \
            return open_handle(flags);                                                         \
        return real_##name(dirfd, path, flags, mode);                                          \
    }

#define OPEN(name)                                                                             \
    int name(const char *path, int flags, ...) {                                               \
        va_list ap;                                                                            \
        va_start(ap, flags);                                                                   \
        mode_t mode = mode_arg(flags, ap);                                                     \
        va_end(ap);                                                                            \
        if (strcmp(path, UDMABUF_PATH) == 0)                                                   \
            return open_handle(flags);                                                         \
        return real_##name(path, flags, mode);                                                 \
    }

OPEN(open)
OPEN(open64)
OPEN_AT(openat)
OPEN_AT(openat64)

int close(int fd) {
    if (fd >= 0 && fd < MAX_FDS)
        is_udmabuf[fd] = 0;
    return real_close(fd);
}

/* A udmabuf is backed by a memfd carrying seals; nothing else here has them. */
static int is_buffer(int fd) { return fcntl(fd, F_GET_SEALS) > 0; }

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);

    if (is_handle(fd)) {
        if (request != UDMABUF_CREATE) {
            errno = ENOTTY;
            return -1;
        }
        const struct udmabuf_create *create = arg;
        if (!(fcntl(create->memfd, F_GET_SEALS) & F_SEAL_SHRINK)) {
            errno = EINVAL;
            return -1;
        }
        int cloexec = create->flags & UDMABUF_FLAGS_CLOEXEC;
        return fcntl(create->memfd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
    }
    if ((request == DMA_BUF_IOCTL_SYNC || request == DMA_BUF_SET_NAME) && is_buffer(fd))
        return 0;

    return real_ioctl(fd, request, arg);
}

/* The thread libcamera runs a virtual camera on (libcamera names its threads). */
static int on_camera_thread(void) {
    char name[16] = {0};
    prctl(PR_GET_NAME, name);
    return strcmp(name, "VirtualCamera") == 0;
}

static __thread int is_real_time;
static __thread struct timespec next_frame;

static void wait_for_frame_time(void) {
    const char *fps_var = getenv("LOOKOUT_VIRTUAL_CAMERA_FPS");
    long fps = fps_var ? atol(fps_var) : 10;
    if (fps <= 0)
        fps = 10;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (next_frame.tv_sec == 0 || now.tv_sec > next_frame.tv_sec + 1)
        next_frame = now;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next_frame, NULL);
    next_frame.tv_nsec += 1000000000L / fps;
    if (next_frame.tv_nsec >= 1000000000L) {
        next_frame.tv_sec += 1;
        next_frame.tv_nsec -= 1000000000L;
    }
}

int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout, const sigset_t *mask) {
    if (on_camera_thread()) {
        if (!is_real_time) {
            struct sched_param param = {.sched_priority = 1};
            if (sched_setscheduler(0, SCHED_FIFO, &param) != 0) {
                perror("libcamera_virtual: the virtual camera thread needs SCHED_FIFO");
                abort();
            }
            is_real_time = 1;
        }
    }
    return real_ppoll(fds, nfds, timeout, mask);
}

void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset) {
    if ((prot & PROT_WRITE) && is_buffer(fd) && on_camera_thread())
        wait_for_frame_time();
    return real_mmap(addr, length, prot, flags, fd, offset);
}

void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
    __attribute__((alias("mmap")));
