/*
 * receiver: the lab's capture point inside the guest.
 *
 * Records every lab test frame (ethertype 0x88B5, magic "NFCL") that reaches eth0 with the kernel's
 * receive time, answers clock probes ("NFCQ" -> "NFCA") at once, and writes its whole record to the
 * virtio-serial port "lab.rx" when the lab asks ("dump\n"). The record lives in this process's
 * memory, so it travels with the guest when it migrates.
 *
 * Optionally (kernel command line lab.dirty_mb_s=N) a child process keeps dirtying guest memory at
 * N MB/s so that a migration has to iterate.
 *
 * Nothing is printed per frame: the console is a slow emulated UART. Errors are printed once, as
 * "LAB-RX-ERROR ...". The process daemonizes once it listens, so that init can print its ready line
 * knowing the receiver is in place.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ETHERTYPE_LAB 0x88B5
#define IFNAME "eth0"
#define PORT_NAME "lab.rx"
#define RCVBUF_BYTES (32 * 1024 * 1024)
#define INITIAL_RECORDS (64 * 1024)
#define MAX_FRAME 2048
/* The kernel takes at most 32 KiB per write on a virtio-serial port. */
#define OUT_CHUNK (32 * 1024)
#define LINE_MAX_LEN 64
#define PORT_RETRY_NS (50 * 1000 * 1000LL)
#define DIRTY_BUFFER (64UL * 1024 * 1024)
#define PAGE (4096UL)
#define DIRTY_TICK_NS (10 * 1000 * 1000LL)

/* Offsets in a frame: dst 6, src 6, ethertype 2, magic 4, then the payload. */
#define OFF_TYPE 12
#define OFF_MAGIC 14
#define OFF_BODY 18
#define MIN_FRAME 60

struct record {
    uint64_t seq;
    int64_t rx_ns;
    uint32_t run_id;
};

struct store {
    struct record *rec;
    size_t count;
    size_t capacity;
    uint64_t overflow; /* frames seen but not kept: the store could not grow */
};

struct dump {
    int active;
    size_t total;   /* records in this dump: a snapshot of the count when it was asked for */
    size_t next;    /* next record to format */
    int trailer;    /* the end line has been formatted */
    char buf[OUT_CHUNK];
    size_t len, off;
};

struct port {
    int fd;
    char path[300];
    int64_t retry_at; /* while the host is not connected, when to look again */
    char line[LINE_MAX_LEN];
    size_t line_len;
};

static int errors_printed;

static void error_once(const char *fmt, ...)
{
    /* Only the first error: one that repeats per frame would flood the emulated console. */
    if (errors_printed++)
        return;
    va_list ap;
    va_start(ap, fmt);
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dprintf(2, "LAB-RX-ERROR %s\n", msg);
}

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

static uint64_t get_u64(const unsigned char *p)
{
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

/* ---- the record ---------------------------------------------------------------------------- */

static int store_init(struct store *s)
{
    /* Anonymous memory: pages are only backed once a record is written to them. */
    s->rec = mmap(NULL, INITIAL_RECORDS * sizeof *s->rec, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->rec == MAP_FAILED)
        return -1;
    s->capacity = INITIAL_RECORDS;
    return 0;
}

static void store_add(struct store *s, uint32_t run_id, uint64_t seq, int64_t rx_ns)
{
    if (s->count == s->capacity) {
        /* mremap moves page tables, not data: growing costs no copy and touches no new page. */
        size_t bigger = s->capacity * 2;
        void *p = mremap(s->rec, s->capacity * sizeof *s->rec, bigger * sizeof *s->rec, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            error_once("cannot grow the record past %zu frames: %s", s->capacity, strerror(errno));
            s->overflow++;
            return;
        }
        s->rec = p;
        s->capacity = bigger;
    }
    s->rec[s->count++] = (struct record){.seq = seq, .rx_ns = rx_ns, .run_id = run_id};
}

/* ---- eth0 ---------------------------------------------------------------------------------- */

static int open_packet_socket(int *ifindex, unsigned char mac[6])
{
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETHERTYPE_LAB));
    if (fd < 0) {
        error_once("socket(AF_PACKET): %s", strerror(errno));
        return -1;
    }
    struct ifreq ifr = {0};
    strncpy(ifr.ifr_name, IFNAME, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
        error_once("%s: no such interface: %s", IFNAME, strerror(errno));
        close(fd);
        return -1;
    }
    *ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
        error_once("%s: no hardware address: %s", IFNAME, strerror(errno));
        close(fd);
        return -1;
    }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE_LAB),
                              .sll_ifindex = *ifindex};
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        error_once("bind(%s): %s", IFNAME, strerror(errno));
        close(fd);
        return -1;
    }
    /* A large buffer rides out the moments the guest is busy (the dirtier, a dump being written). */
    int size = RCVBUF_BYTES;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0) {
        error_once("SO_TIMESTAMPNS: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static uint64_t drops_total;

static uint64_t socket_drops(int fd)
{
    /* PACKET_STATISTICS resets the kernel's counters on every read: keep the running total. */
    struct tpacket_stats st;
    socklen_t len = sizeof st;
    if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0)
        drops_total += st.tp_drops;
    return drops_total;
}

static void answer_probe(int fd, int ifindex, const unsigned char mac[6], const unsigned char *probe,
                         int64_t rx_ns)
{
    unsigned char reply[MIN_FRAME] = {0};
    memcpy(reply, probe + 6, 6); /* back to the probe's source */
    memcpy(reply + 6, mac, 6);
    reply[OFF_TYPE] = ETHERTYPE_LAB >> 8;
    reply[OFF_TYPE + 1] = ETHERTYPE_LAB & 0xff;
    memcpy(reply + OFF_MAGIC, "NFCA", 4);
    memcpy(reply + OFF_BODY, probe + OFF_BODY, 12); /* probe id and the host's send time, as sent */
    put_u64(reply + OFF_BODY + 12, (uint64_t)rx_ns);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE_LAB),
                             .sll_ifindex = ifindex, .sll_halen = 6};
    memcpy(to.sll_addr, probe + 6, 6);
    if (sendto(fd, reply, sizeof reply, 0, (struct sockaddr *)&to, sizeof to) < 0)
        error_once("sending a probe reply: %s", strerror(errno));
}

/* Reads every frame that is waiting; returns -1 when the socket failed. */
static int read_frames(int fd, int ifindex, const unsigned char mac[6], struct store *s)
{
    for (;;) {
        unsigned char frame[MAX_FRAME];
        char control[CMSG_SPACE(sizeof(struct timespec))];
        struct sockaddr_ll from;
        struct iovec iov = {.iov_base = frame, .iov_len = sizeof frame};
        struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                             .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
        ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            error_once("reading %s: %s", IFNAME, strerror(errno));
            return -1;
        }
        if (from.sll_pkttype == PACKET_OUTGOING || n < OFF_BODY + 12)
            continue; /* our own replies, or too short to be the lab's */
        int64_t rx_ns = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                rx_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            }
        }
        if (rx_ns < 0)
            rx_ns = now_ns(CLOCK_REALTIME);
        const unsigned char *magic = frame + OFF_MAGIC;
        if (memcmp(magic, "NFCL", 4) == 0)
            store_add(s, get_u32(frame + OFF_BODY), get_u64(frame + OFF_BODY + 4), rx_ns);
        else if (memcmp(magic, "NFCQ", 4) == 0)
            answer_probe(fd, ifindex, mac, frame, rx_ns);
    }
}

/* ---- the virtio-serial port ---------------------------------------------------------------- */

static int find_port(char *path, size_t size)
{
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir)
        return -1;
    int found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char name_file[300], name[64] = {0};
        snprintf(name_file, sizeof name_file, "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *f = fopen(name_file, "r");
        if (!f)
            continue;
        if (fgets(name, sizeof name, f) && strncmp(name, PORT_NAME, strlen(PORT_NAME)) == 0 &&
            (name[strlen(PORT_NAME)] == '\n' || name[strlen(PORT_NAME)] == '\0')) {
            snprintf(path, size, "/dev/%s", e->d_name);
            found = 0;
        }
        fclose(f);
    }
    closedir(dir);
    return found;
}

static int open_port(struct port *p)
{
    /* The port's name arrives from the host shortly after the driver binds: look for a while. */
    for (int i = 0; i < 50; i++) {
        if (find_port(p->path, sizeof p->path) == 0) {
            for (int j = 0; j < 20; j++) {
                p->fd = open(p->path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
                if (p->fd >= 0)
                    return 0;
                usleep(50000); /* devtmpfs may not have made the node yet */
            }
            error_once("cannot open %s (%s): %s", p->path, PORT_NAME, strerror(errno));
            return -1;
        }
        usleep(100000);
    }
    error_once("no virtio-serial port named %s (is virtio_console loaded?)", PORT_NAME);
    return -1;
}

static void dump_begin(struct dump *d, const struct store *s, int pfd)
{
    d->active = 1;
    d->total = s->count;
    d->next = 0;
    d->trailer = 0;
    d->off = 0;
    d->len = (size_t)snprintf(d->buf, sizeof d->buf, "LAB-RX 1 frames=%zu drops=%llu now=%lld\n",
                              d->total, (unsigned long long)(socket_drops(pfd) + s->overflow),
                              (long long)now_ns(CLOCK_REALTIME));
}

/* Formats records into the (emptied) output buffer. */
static void dump_fill(struct dump *d, const struct store *s)
{
    d->off = d->len = 0;
    while (d->next < d->total && d->len + LINE_MAX_LEN <= sizeof d->buf) {
        const struct record *r = &s->rec[d->next++];
        d->len += (size_t)snprintf(d->buf + d->len, sizeof d->buf - d->len, "%u %llu %lld\n",
                                   r->run_id, (unsigned long long)r->seq, (long long)r->rx_ns);
    }
    if (d->next == d->total && !d->trailer && d->len + LINE_MAX_LEN <= sizeof d->buf) {
        d->len += (size_t)snprintf(d->buf + d->len, sizeof d->buf - d->len, "LAB-RX-END %zu\n", d->total);
        d->trailer = 1;
    }
}

/* Writes what the port takes now; ends the dump when all is written or the host went away. */
static void dump_write(struct dump *d, const struct store *s, struct port *p)
{
    for (;;) {
        if (d->off == d->len) {
            if (d->trailer) {
                d->active = 0;
                return;
            }
            dump_fill(d, s);
        }
        ssize_t n = write(p->fd, d->buf + d->off, d->len - d->off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                d->active = 0; /* the host left mid-dump; it asks again when it wants the record */
            return;
        }
        d->off += (size_t)n;
    }
}

/* Reads the lab's requests; returns 1 when a dump was asked for, 0 otherwise, -1 on no host. */
static int read_requests(struct port *p)
{
    int asked = 0;
    for (;;) {
        char buf[256];
        ssize_t n = read(p->fd, buf, sizeof buf);
        if (n == 0)
            return asked ? asked : -1; /* no host connected */
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? asked : -1;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                p->line[p->line_len] = '\0';
                if (strcmp(p->line, "dump") == 0)
                    asked = 1;
                p->line_len = 0;
            } else if (p->line_len < sizeof p->line - 1) {
                p->line[p->line_len++] = buf[i];
            }
        }
    }
}

/* ---- memory dirtier ------------------------------------------------------------------------ */

static long dirty_rate_from_cmdline(void)
{
    FILE *f = fopen("/proc/cmdline", "r");
    if (!f)
        return 0;
    char line[4096] = {0};
    long rate = 0;
    if (fgets(line, sizeof line, f)) {
        for (char *tok = strtok(line, " \n"); tok; tok = strtok(NULL, " \n"))
            if (strncmp(tok, "lab.dirty_mb_s=", 15) == 0)
                rate = strtol(tok + 15, NULL, 10);
    }
    fclose(f);
    return rate;
}

static void dirty_forever(long mb_s)
{
    unsigned char *buf = mmap(NULL, DIRTY_BUFFER, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        error_once("dirtier: cannot map %lu MiB: %s", DIRTY_BUFFER >> 20, strerror(errno));
        _exit(1);
    }
    const size_t pages = DIRTY_BUFFER / PAGE;
    const double pages_per_ns = (double)mb_s * (1024.0 * 1024.0 / PAGE) / 1e9;
    const int64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t done = 0;
    size_t page = 0;
    unsigned char stamp = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        /* Paced against the start, so a late wake-up is caught up rather than lost. */
        uint64_t due = (uint64_t)((double)(now_ns(CLOCK_MONOTONIC) - start) * pages_per_ns);
        for (; done < due; done++) {
            buf[page * PAGE] = ++stamp;
            page = (page + 1) % pages;
        }
        next.tv_nsec += DIRTY_TICK_NS;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
}

static void start_dirtier(int pfd, int port_fd)
{
    long rate = dirty_rate_from_cmdline();
    if (rate <= 0)
        return;
    pid_t pid = fork();
    if (pid < 0) {
        error_once("dirtier: fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        /* Ends with the receiver; holds none of its sockets. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(pfd);
        if (port_fd >= 0)
            close(port_fd);
        dirty_forever(rate);
    }
}

/* ---- main loop ----------------------------------------------------------------------------- */

static int serve(int pfd, int ifindex, const unsigned char mac[6], struct store *s, struct port *p)
{
    static struct dump d;
    for (;;) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        struct pollfd fds[2] = {{.fd = pfd, .events = POLLIN}, {.fd = -1}};
        int timeout = -1;
        /* No host on the port makes poll report POLLHUP at once: look again only now and then. */
        if (p->fd >= 0 && now >= p->retry_at) {
            fds[1].fd = p->fd;
            fds[1].events = POLLIN | (d.active ? POLLOUT : 0);
        } else if (p->fd >= 0) {
            timeout = (int)((p->retry_at - now) / 1000000) + 1;
        }
        if (poll(fds, 2, timeout) < 0) {
            if (errno == EINTR)
                continue;
            error_once("poll: %s", strerror(errno));
            return 1;
        }
        if ((fds[0].revents & POLLIN) && read_frames(pfd, ifindex, mac, s) < 0)
            return 1;
        if (fds[0].revents & (POLLERR | POLLNVAL)) {
            error_once("%s: socket error", IFNAME);
            return 1;
        }
        if (!fds[1].revents)
            continue;
        int asked = read_requests(p);
        if (asked < 0) {
            /*
             * A dump asked for stays asked for: the host's request can come in before the guest
             * hears that the host connected, and until it does, writes would block and poll says
             * POLLHUP. The dump goes out once the host is there.
             */
            p->line_len = 0;
            p->retry_at = now_ns(CLOCK_MONOTONIC) + PORT_RETRY_NS;
            continue;
        }
        if (asked)
            dump_begin(&d, s, pfd);
        if (d.active)
            dump_write(&d, s, p);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct store s = {0};
    if (store_init(&s) < 0) {
        error_once("cannot map the record: %s", strerror(errno));
        return 1;
    }
    int ifindex;
    unsigned char mac[6];
    int pfd = open_packet_socket(&ifindex, mac);
    if (pfd < 0)
        return 1;
    struct port p = {.fd = -1};
    open_port(&p); /* without it frames are still recorded and probes answered */

    /* Listening: let init go on, and keep running in the background. */
    pid_t pid = fork();
    if (pid < 0) {
        error_once("fork: %s", strerror(errno));
        return 1;
    }
    if (pid > 0)
        return 0;
    setsid();
    start_dirtier(pfd, p.fd);
    return serve(pfd, ifindex, mac, &s, &p);
}
