/*
 * A V4L2 camera in user space, for tests on machines without one (and without v4l2loopback).
 *
 * Preloaded into the real `lookout` binary (LD_PRELOAD). The camera is a path that the test links
 * to /dev/null, so that GStreamer's v4l2src finds a character device there; this library then
 * answers the V4L2 ioctls and mmap calls made on descriptors opened through that path, the way a
 * UVC webcam driver would: one YUYV format at one size and rate, MMAP streaming buffers.
 *
 * Environment:
 *   LOOKOUT_FAKE_V4L2_PATH       the camera's path (required; without it nothing is faked)
 *   LOOKOUT_FAKE_V4L2_RGB        "r,g,b": the colour of every frame (default 200,30,30)
 *   LOOKOUT_FAKE_V4L2_FROZEN     a file: while it exists the camera stays open and streaming but
 *                                sends no frame (a hung camera): poll never reports it readable
 *   LOOKOUT_FAKE_V4L2_SCENE      a file holding "r,g,b": when it exists, the colour of the frames
 *                                from now on (the scene in front of the camera changes)
 *   LOOKOUT_FAKE_V4L2_UNPLUGGED  a file: while it exists the camera is unplugged, so opening it
 *                                fails with ENOENT and streaming fails with ENODEV
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WIDTH 320
#define HEIGHT 240
#define FPS 10
#define FRAME_BYTES (WIDTH * HEIGHT * 2)
#define OFFSET_STEP 0x100000
#define MAX_BUFFERS 8
#define MAX_FDS 4096

struct buffer {
    void *mem;
    int queued;
    uint64_t queued_at; /* order of QBUF, so DQBUF returns the oldest */
};

/* Shared by a descriptor and its duplicates (v4l2src's buffer pool works on a dup). */
struct camera {
    int refs;
    int streaming;
    unsigned count;
    struct buffer buffers[MAX_BUFFERS];
    uint64_t queue_clock;
    uint32_t sequence;
    struct timespec next_frame;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct camera *cameras[MAX_FDS];

static const char *camera_path(void) { return getenv("LOOKOUT_FAKE_V4L2_PATH"); }

static int unplugged(void)
{
    const char *flag = getenv("LOOKOUT_FAKE_V4L2_UNPLUGGED");
    return flag && access(flag, F_OK) == 0;
}

static int frozen(void)
{
    const char *flag = getenv("LOOKOUT_FAKE_V4L2_FROZEN");
    return flag && access(flag, F_OK) == 0;
}

static int is_camera_path(const char *path)
{
    const char *cam = camera_path();
    return cam && path && strcmp(cam, path) == 0;
}

static struct camera *camera_of(int fd)
{
    return fd >= 0 && fd < MAX_FDS ? cameras[fd] : NULL;
}

/* After a successful open of the camera's path: the descriptor becomes a camera. */
static int opened(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return fd;
    struct camera *cam = calloc(1, sizeof *cam);
    if (!cam) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    cam->refs = 1;
    pthread_mutex_lock(&lock);
    cameras[fd] = cam;
    pthread_mutex_unlock(&lock);
    return fd;
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

/* Every open entry point: the camera's path opens (as the /dev/null it links to) as a camera. */
static int open_any(const char *real_name, int at, int dirfd, const char *path, int flags,
                    mode_t mode)
{
    if (is_camera_path(path) && unplugged()) {
        errno = ENOENT;
        return -1;
    }
    int fd = at ? REAL(real_name, int (*)(int, const char *, int, ...))(dirfd, path, flags, mode)
                : REAL(real_name, int (*)(const char *, int, ...))(path, flags, mode);
    return is_camera_path(path) ? opened(fd) : fd;
}

/* The optional third argument of open(2). */
#define MODE_ARG(flags)                                                                            \
    mode_t mode = 0;                                                                               \
    if ((flags) & (O_CREAT | O_TMPFILE)) {                                                         \
        va_list ap;                                                                                \
        va_start(ap, flags);                                                                       \
        mode = va_arg(ap, mode_t);                                                                 \
        va_end(ap);                                                                                \
    }

int open(const char *path, int flags, ...)
{
    MODE_ARG(flags);
    return open_any("open", 0, AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    MODE_ARG(flags);
    return open_any("open64", 0, AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    MODE_ARG(flags);
    return open_any("openat", 1, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    MODE_ARG(flags);
    return open_any("openat64", 1, dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open64(path, flags); }

/* Drops descriptor `fd`'s share of its camera; called with the lock held. */
static void forget(int fd)
{
    struct camera *cam = camera_of(fd);
    if (cam && --cam->refs == 0)
        free(cam);
    if (cam)
        cameras[fd] = NULL;
}

int close(int fd)
{
    pthread_mutex_lock(&lock);
    forget(fd);
    pthread_mutex_unlock(&lock);
    return REAL("close", int (*)(int))(fd);
}

/* After a successful duplication of `fd` to `copy`: both name the same camera. */
static int duplicated(int fd, int copy)
{
    pthread_mutex_lock(&lock);
    struct camera *cam = camera_of(fd);
    if (cam && copy >= 0 && copy < MAX_FDS && copy != fd) {
        forget(copy);
        cam->refs++;
        cameras[copy] = cam;
    }
    pthread_mutex_unlock(&lock);
    return copy;
}

int dup(int fd) { return duplicated(fd, REAL("dup", int (*)(int))(fd)); }

int dup2(int fd, int copy)
{
    return duplicated(fd, REAL("dup2", int (*)(int, int))(fd, copy));
}

int dup3(int fd, int copy, int flags)
{
    return duplicated(fd, REAL("dup3", int (*)(int, int, int))(fd, copy, flags));
}

void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    pthread_mutex_lock(&lock);
    struct camera *cam = camera_of(fd);
    if (!cam) {
        pthread_mutex_unlock(&lock);
        return REAL("mmap", void *(*)(void *, size_t, int, int, int, off_t))(addr, length, prot,
                                                                            flags, fd, offset);
    }
    unsigned index = offset / OFFSET_STEP;
    if (offset % OFFSET_STEP || index >= cam->count || length > FRAME_BYTES) {
        pthread_mutex_unlock(&lock);
        errno = EINVAL;
        return MAP_FAILED;
    }
    void *mem = REAL("mmap", void *(*)(void *, size_t, int, int, int, off_t))(
        NULL, FRAME_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem != MAP_FAILED)
        cam->buffers[index].mem = mem;
    pthread_mutex_unlock(&lock);
    return mem;
}

void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    return mmap(addr, length, prot, flags, fd, offset);
}

int munmap(void *addr, size_t length)
{
    pthread_mutex_lock(&lock);
    for (int fd = 0; fd < MAX_FDS; fd++)
        if (cameras[fd])
            for (unsigned i = 0; i < MAX_BUFFERS; i++)
                if (cameras[fd]->buffers[i].mem == addr)
                    cameras[fd]->buffers[i].mem = NULL;
    pthread_mutex_unlock(&lock);
    return REAL("munmap", int (*)(void *, size_t))(addr, length);
}

static void fill_format(struct v4l2_pix_format *pix)
{
    memset(pix, 0, sizeof *pix);
    pix->width = WIDTH;
    pix->height = HEIGHT;
    pix->pixelformat = V4L2_PIX_FMT_YUYV;
    pix->field = V4L2_FIELD_NONE;
    pix->bytesperline = WIDTH * 2;
    pix->sizeimage = FRAME_BYTES;
    pix->colorspace = V4L2_COLORSPACE_SRGB;
}

static uint8_t clamp8(int v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

/* The frame: one colour, as BT.601 limited-range YUYV (what webcams send). */
static void fill_frame(uint8_t *mem)
{
    int r = 200, g = 30, b = 30;
    const char *rgb = getenv("LOOKOUT_FAKE_V4L2_RGB");
    if (rgb)
        sscanf(rgb, "%d,%d,%d", &r, &g, &b);
    const char *scene = getenv("LOOKOUT_FAKE_V4L2_SCENE");
    FILE *f = scene ? fopen(scene, "r") : NULL;
    if (f) {
        int sr, sg, sb;
        if (fscanf(f, "%d,%d,%d", &sr, &sg, &sb) == 3)
            r = sr, g = sg, b = sb;
        fclose(f);
    }
    uint8_t y = clamp8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16);
    uint8_t u = clamp8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
    uint8_t v = clamp8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
    for (size_t i = 0; i < FRAME_BYTES; i += 4) {
        mem[i] = y;
        mem[i + 1] = u;
        mem[i + 2] = y;
        mem[i + 3] = v;
    }
}

static void timespec_add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

static int fail(int err)
{
    errno = err;
    return -1;
}

/* VIDIOC_DQBUF: waits for the next frame time, fills the oldest queued buffer. */
static int dequeue(int fd, struct v4l2_buffer *buf)
{
    struct timespec due;
    pthread_mutex_lock(&lock);
    struct camera *cam = camera_of(fd);
    if (!cam || !cam->streaming) {
        pthread_mutex_unlock(&lock);
        return fail(EINVAL);
    }
    due = cam->next_frame;
    timespec_add_ns(&cam->next_frame, 1000000000L / FPS);
    pthread_mutex_unlock(&lock);

    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
    if (unplugged())
        return fail(ENODEV);

    pthread_mutex_lock(&lock);
    cam = camera_of(fd);
    int oldest = -1;
    for (unsigned i = 0; cam && i < cam->count; i++)
        if (cam->buffers[i].queued &&
            (oldest < 0 || cam->buffers[i].queued_at < cam->buffers[oldest].queued_at))
            oldest = i;
    if (!cam || !cam->streaming || oldest < 0) {
        pthread_mutex_unlock(&lock);
        return fail(EAGAIN);
    }
    struct buffer *b = &cam->buffers[oldest];
    if (b->mem)
        fill_frame(b->mem);
    b->queued = 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    memset(buf, 0, sizeof *buf);
    buf->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    buf->memory = V4L2_MEMORY_MMAP;
    buf->index = oldest;
    buf->bytesused = FRAME_BYTES;
    buf->length = FRAME_BYTES;
    buf->m.offset = oldest * OFFSET_STEP;
    buf->field = V4L2_FIELD_NONE;
    buf->flags = V4L2_BUF_FLAG_MAPPED | V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
    buf->timestamp.tv_sec = now.tv_sec;
    buf->timestamp.tv_usec = now.tv_nsec / 1000;
    buf->sequence = cam->sequence++;
    pthread_mutex_unlock(&lock);
    return 0;
}

static int camera_ioctl(struct camera *cam, unsigned long request, void *arg)
{
    switch (request) {
    case VIDIOC_QUERYCAP: {
        struct v4l2_capability *cap = arg;
        memset(cap, 0, sizeof *cap);
        strcpy((char *)cap->driver, "uvcvideo");
        strcpy((char *)cap->card, "Test Camera");
        strcpy((char *)cap->bus_info, "usb-0000:00:14.0-1");
        cap->version = (6 << 16) | (1 << 8);
        cap->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        cap->capabilities = cap->device_caps | V4L2_CAP_DEVICE_CAPS;
        return 0;
    }
    case VIDIOC_ENUMINPUT: {
        struct v4l2_input *input = arg;
        if (input->index != 0)
            return fail(EINVAL);
        memset(input, 0, sizeof *input);
        strcpy((char *)input->name, "Camera 1");
        input->type = V4L2_INPUT_TYPE_CAMERA;
        return 0;
    }
    case VIDIOC_G_INPUT:
        *(int *)arg = 0;
        return 0;
    case VIDIOC_S_INPUT:
        return *(int *)arg == 0 ? 0 : fail(EINVAL);
    case VIDIOC_ENUM_FMT: {
        struct v4l2_fmtdesc *desc = arg;
        if (desc->index != 0 || desc->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return fail(EINVAL);
        uint32_t index = desc->index, type = desc->type;
        memset(desc, 0, sizeof *desc);
        desc->index = index;
        desc->type = type;
        strcpy((char *)desc->description, "YUYV 4:2:2");
        desc->pixelformat = V4L2_PIX_FMT_YUYV;
        return 0;
    }
    case VIDIOC_ENUM_FRAMESIZES: {
        struct v4l2_frmsizeenum *size = arg;
        if (size->index != 0 || size->pixel_format != V4L2_PIX_FMT_YUYV)
            return fail(EINVAL);
        size->type = V4L2_FRMSIZE_TYPE_DISCRETE;
        size->discrete.width = WIDTH;
        size->discrete.height = HEIGHT;
        return 0;
    }
    case VIDIOC_ENUM_FRAMEINTERVALS: {
        struct v4l2_frmivalenum *ival = arg;
        if (ival->index != 0 || ival->pixel_format != V4L2_PIX_FMT_YUYV ||
            ival->width != WIDTH || ival->height != HEIGHT)
            return fail(EINVAL);
        ival->type = V4L2_FRMIVAL_TYPE_DISCRETE;
        ival->discrete.numerator = 1;
        ival->discrete.denominator = FPS;
        return 0;
    }
    case VIDIOC_G_FMT:
    case VIDIOC_S_FMT:
    case VIDIOC_TRY_FMT: {
        struct v4l2_format *fmt = arg;
        if (fmt->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return fail(EINVAL);
        if (request == VIDIOC_S_FMT && cam->count)
            return fail(EBUSY);
        fill_format(&fmt->fmt.pix);
        return 0;
    }
    case VIDIOC_G_PARM:
    case VIDIOC_S_PARM: {
        struct v4l2_streamparm *parm = arg;
        if (parm->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return fail(EINVAL);
        memset(&parm->parm.capture, 0, sizeof parm->parm.capture);
        parm->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
        parm->parm.capture.timeperframe.numerator = 1;
        parm->parm.capture.timeperframe.denominator = FPS;
        return 0;
    }
    case VIDIOC_REQBUFS: {
        struct v4l2_requestbuffers *req = arg;
        if (req->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || req->memory != V4L2_MEMORY_MMAP)
            return fail(EINVAL);
        if (cam->streaming)
            return fail(EBUSY);
        unsigned count = req->count > MAX_BUFFERS ? MAX_BUFFERS : req->count;
        for (unsigned i = count; i < cam->count; i++)
            cam->buffers[i] = (struct buffer){0};
        for (unsigned i = 0; i < count; i++)
            cam->buffers[i].queued = 0;
        cam->count = count;
        memset(req->reserved, 0, sizeof req->reserved);
        req->count = count;
        req->capabilities = V4L2_BUF_CAP_SUPPORTS_MMAP;
        return 0;
    }
    case VIDIOC_QUERYBUF:
    case VIDIOC_QBUF: {
        struct v4l2_buffer *buf = arg;
        if (buf->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || buf->index >= cam->count)
            return fail(EINVAL);
        struct buffer *b = &cam->buffers[buf->index];
        if (request == VIDIOC_QBUF) {
            if (buf->memory != V4L2_MEMORY_MMAP || b->queued)
                return fail(EINVAL);
            b->queued = 1;
            b->queued_at = cam->queue_clock++;
        }
        buf->memory = V4L2_MEMORY_MMAP;
        buf->length = FRAME_BYTES;
        buf->m.offset = buf->index * OFFSET_STEP;
        buf->field = V4L2_FIELD_NONE;
        buf->flags = V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | (b->mem ? V4L2_BUF_FLAG_MAPPED : 0) |
                     (b->queued ? V4L2_BUF_FLAG_QUEUED : 0);
        return 0;
    }
    case VIDIOC_STREAMON:
        if (unplugged())
            return fail(ENODEV);
        cam->streaming = 1;
        clock_gettime(CLOCK_MONOTONIC, &cam->next_frame);
        return 0;
    case VIDIOC_STREAMOFF:
        cam->streaming = 0;
        for (unsigned i = 0; i < cam->count; i++)
            cam->buffers[i].queued = 0;
        return 0;
    case VIDIOC_QUERYCTRL:
    case VIDIOC_QUERY_EXT_CTRL:
    case VIDIOC_QUERYMENU:
    case VIDIOC_G_CTRL:
    case VIDIOC_S_CTRL:
    case VIDIOC_CROPCAP:
    case VIDIOC_G_SELECTION:
    case VIDIOC_S_SELECTION:
    case VIDIOC_G_CROP:
    case VIDIOC_S_CROP:
        return fail(EINVAL);
    default:
        return fail(ENOTTY);
    }
}

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);

    if (request == VIDIOC_DQBUF && camera_of(fd))
        return dequeue(fd, arg);
    pthread_mutex_lock(&lock);
    struct camera *cam = camera_of(fd);
    if (!cam) {
        pthread_mutex_unlock(&lock);
        return REAL("ioctl", int (*)(int, unsigned long, ...))(fd, request, arg);
    }
    int rc = camera_ioctl(cam, request, arg);
    int err = errno;
    pthread_mutex_unlock(&lock);
    errno = err;
    return rc;
}

/*
 * poll and ppoll: a frozen camera's descriptor never becomes readable, so the caller waits on
 * its other descriptors (GStreamer's wake-up pipe) or its timeout, as with a hung device.
 */
static int poll_any(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
                    const sigset_t *mask, int timeout_ms, int is_ppoll)
{
    int hide = 0;
    if (frozen()) {
        pthread_mutex_lock(&lock);
        for (nfds_t i = 0; i < n; i++)
            hide |= camera_of(fds[i].fd) != NULL;
        pthread_mutex_unlock(&lock);
    }
    struct pollfd *use = fds;
    struct pollfd *copy = NULL;
    if (hide) {
        copy = malloc(n * sizeof *copy);
        if (!copy)
            return fail(ENOMEM);
        memcpy(copy, fds, n * sizeof *copy);
        pthread_mutex_lock(&lock);
        for (nfds_t i = 0; i < n; i++)
            if (camera_of(copy[i].fd))
                copy[i].fd = -1;
        pthread_mutex_unlock(&lock);
        use = copy;
    }
    int ready = is_ppoll
        ? REAL("ppoll", int (*)(struct pollfd *, nfds_t, const struct timespec *,
                                const sigset_t *))(use, n, timeout, mask)
        : REAL("poll", int (*)(struct pollfd *, nfds_t, int))(use, n, timeout_ms);
    if (copy) {
        for (nfds_t i = 0; i < n; i++)
            fds[i].revents = copy[i].revents;
        free(copy);
    }
    return ready;
}

int poll(struct pollfd *fds, nfds_t n, int timeout_ms)
{
    return poll_any(fds, n, NULL, NULL, timeout_ms, 0);
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask)
{
    return poll_any(fds, n, timeout, mask, 0, 1);
}
