/* ipc.c — frames between hikyaku's processes (format in ipc.h). */
#include "lib/ipc.h"

#include "lib/alloc.h"
#include "lib/log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IPC_HDR_LEN 5
#define IPC_FIELD_HDR_LEN 5
#define IPC_READS_PER_WAKE 64

static void ipc_put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t ipc_get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

size_t ipc_frame_begin(struct buf *out, uint8_t type)
{
	size_t start = out->len;
	unsigned char hdr[IPC_HDR_LEN] = {0, 0, 0, 0, type};
	(void)buf_append(out, hdr, sizeof(hdr));
	return start;
}

int ipc_frame_add(struct buf *out, uint8_t tag, const void *p, size_t len)
{
	unsigned char hdr[IPC_FIELD_HDR_LEN];
	if (len > IPC_FRAME_MAX)
		return -1;
	hdr[0] = tag;
	ipc_put_be32(hdr + 1, (uint32_t)len);
	if (buf_reserve(out, sizeof(hdr) + len) < 0)
		return -1;
	(void)buf_append(out, hdr, sizeof(hdr));
	(void)buf_append(out, p, len);
	return 0;
}

int ipc_frame_add_str(struct buf *out, uint8_t tag, const char *s)
{
	return ipc_frame_add(out, tag, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

int ipc_frame_add_u64(struct buf *out, uint8_t tag, uint64_t v)
{
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * (7 - i)));
	return ipc_frame_add(out, tag, b, sizeof(b));
}

int ipc_frame_end(struct buf *out, size_t start)
{
	if (out->len < start + IPC_HDR_LEN || out->len - start > IPC_FRAME_MAX) {
		out->len = start;
		if (out->data != NULL)
			out->data[out->len] = '\0';
		return -1;
	}
	ipc_put_be32(out->data + start, (uint32_t)(out->len - start - 4));
	return 0;
}

int ipc_frame_check(const struct ipc_schema *sc, const void *p, size_t len, struct ipc_frame *f,
		    const char **error_r)
{
	const unsigned char *b = p;
	if (len < IPC_HDR_LEN || len > IPC_FRAME_MAX) {
		*error_r = "frame size out of bounds";
		return -1;
	}
	if (ipc_get_be32(b) != len - 4) {
		*error_r = "frame length does not match the datagram";
		return -1;
	}
	if (!sc->types[b[4]]) {
		*error_r = "unknown frame type";
		return -1;
	}
	size_t off = IPC_HDR_LEN;
	while (off < len) {
		if (len - off < IPC_FIELD_HDR_LEN) {
			*error_r = "truncated field header";
			return -1;
		}
		uint8_t tag = b[off];
		size_t flen = ipc_get_be32(b + off + 1);
		off += IPC_FIELD_HDR_LEN;
		if (flen > len - off) {
			*error_r = "field runs past the frame";
			return -1;
		}
		switch (sc->tags[tag]) {
		case IPC_K_U64:
			if (flen != 8) {
				*error_r = "number field is not 8 octets";
				return -1;
			}
			break;
		case IPC_K_STR:
			if (memchr(b + off, '\0', flen) != NULL) {
				*error_r = "NUL in a string field";
				return -1;
			}
			break;
		case IPC_K_BYTES:
			break;
		default:
			*error_r = "unknown field tag";
			return -1;
		}
		off += flen;
	}
	f->type = b[4];
	f->body = b + IPC_HDR_LEN;
	f->body_len = len - IPC_HDR_LEN;
	return 0;
}

int ipc_field_next(const struct ipc_frame *f, size_t *off, struct ipc_field *fld)
{
	if (*off + IPC_FIELD_HDR_LEN > f->body_len)
		return 0;
	fld->tag = f->body[*off];
	fld->len = ipc_get_be32(f->body + *off + 1);
	fld->p = f->body + *off + IPC_FIELD_HDR_LEN;
	*off += IPC_FIELD_HDR_LEN + fld->len; /* checked by ipc_frame_check */
	return 1;
}

uint64_t ipc_field_u64(const struct ipc_field *fld)
{
	uint64_t v = 0;
	for (size_t i = 0; i < 8 && i < fld->len; i++)
		v = v << 8 | fld->p[i];
	return v;
}

bool ipc_field_str(const struct ipc_field *fld, char *out, size_t outlen)
{
	if (fld->len >= outlen)
		return false;
	memcpy(out, fld->p, fld->len);
	out[fld->len] = '\0';
	return true;
}

/* ---- channel ---- */

struct ipc_out {
	struct ipc_out *next;
	int fd; /* a dup, -1 for none */
	size_t len;
	unsigned char data[];
};

struct ipc_chan {
	int fd;
	const struct ipc_schema *sc;
	struct event *rev, *wev;
	ipc_frame_cb on_frame;
	ipc_close_cb on_close;
	void *arg;
	struct ipc_out *out_head, **out_tail;
	bool closed;
	unsigned char *in; /* IPC_FRAME_MAX + 1 */
};

static void ipc_chan_fail(struct ipc_chan *ch, const char *why)
{
	if (ch->closed)
		return;
	ch->closed = true;
	event_del(ch->rev);
	event_del(ch->wev);
	ch->on_close(ch, why, ch->arg);
}

static int ipc_sendmsg(int sock, const void *p, size_t len, int fd, int flags)
{
	struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.buf;
		msg.msg_controllen = sizeof(cm.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	return 0;
}

static void ipc_on_write(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct ipc_chan *ch = arg;
	while (ch->out_head != NULL) {
		struct ipc_out *o = ch->out_head;
		if (ipc_sendmsg(ch->fd, o->data, o->len, o->fd, MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
				event_add(ch->wev, NULL);
				return;
			}
			ipc_chan_fail(ch, strerror(errno));
			return;
		}
		ch->out_head = o->next;
		if (ch->out_head == NULL)
			ch->out_tail = &ch->out_head;
		if (o->fd >= 0)
			close(o->fd);
		free(o);
	}
}

int ipc_send(struct ipc_chan *ch, const struct buf *frame, int fd)
{
	if (ch->closed)
		return -1;
	if (ch->out_head == NULL) {
		if (ipc_sendmsg(ch->fd, frame->data, frame->len, fd, MSG_DONTWAIT) == 0)
			return 0;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
			/* The peer is gone: the reader side reports it. */
			event_active(ch->rev, EV_READ, 0);
			return -1;
		}
	}
	struct ipc_out *o = xmalloc(sizeof(*o) + frame->len);
	o->next = NULL;
	o->len = frame->len;
	memcpy(o->data, frame->data, frame->len);
	o->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;
	*ch->out_tail = o;
	ch->out_tail = &o->next;
	event_add(ch->wev, NULL);
	return 0;
}

int ipc_send_blocking(int sock, const struct buf *frame, int fd)
{
	return ipc_sendmsg(sock, frame->data, frame->len, fd, 0);
}

static void ipc_on_read(evutil_socket_t sock, short what, void *arg)
{
	(void)what;
	struct ipc_chan *ch = arg;
	for (int i = 0; i < IPC_READS_PER_WAKE && !ch->closed; i++) {
		struct iovec iov = {.iov_base = ch->in, .iov_len = IPC_FRAME_MAX + 1};
		union {
			struct cmsghdr hdr;
			char buf[CMSG_SPACE(4 * sizeof(int))];
		} cm;
		struct msghdr msg = {.msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf)};
		ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			ipc_chan_fail(ch, strerror(errno));
			return;
		}
		if (n == 0) {
			ipc_chan_fail(ch, "closed by peer");
			return;
		}
		/* Every descriptor that came is ours to close unless handed on. */
		int fd = -1, extra = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t k = 0; k < nfd; k++) {
				int got;
				memcpy(&got, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
				if (fd < 0) {
					fd = got;
				} else {
					close(got);
					extra++;
				}
			}
		}
		const char *error = NULL;
		struct ipc_frame f;
		/* MSG_CTRUNC: the descriptor did not fit (out of descriptors,
		 * EMFILE): the frame still counts, without it (fd -1), and its
		 * handler tells the sender. */
		if ((msg.msg_flags & MSG_CTRUNC) != 0)
			log_warn("event=ipc_fd_lost channel=%s reason=\"no descriptor left\"",
				 ch->sc->name);
		if ((msg.msg_flags & MSG_TRUNC) != 0 || extra != 0)
			error = "frame or descriptors truncated";
		else if (ipc_frame_check(ch->sc, ch->in, (size_t)n, &f, &error) == 0)
			error = NULL;
		if (error != NULL) {
			if (fd >= 0)
				close(fd);
			log_err("event=ipc_error channel=%s error=\"%s\"", ch->sc->name, error);
			ipc_chan_fail(ch, error);
			return;
		}
		ch->on_frame(ch, &f, fd, ch->arg);
	}
}

struct ipc_chan *ipc_chan_new(struct event_base *base, int fd, const struct ipc_schema *sc,
			      ipc_frame_cb on_frame, ipc_close_cb on_close, void *arg)
{
	struct ipc_chan *ch = xcalloc(1, sizeof(*ch));
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	ch->fd = fd;
	ch->sc = sc;
	ch->on_frame = on_frame;
	ch->on_close = on_close;
	ch->arg = arg;
	ch->out_tail = &ch->out_head;
	ch->in = xmalloc(IPC_FRAME_MAX + 1);
	ch->rev = event_new(base, fd, EV_READ | EV_PERSIST, ipc_on_read, ch);
	ch->wev = event_new(base, fd, EV_WRITE, ipc_on_write, ch);
	event_add(ch->rev, NULL);
	return ch;
}

bool ipc_chan_open(const struct ipc_chan *ch)
{
	return ch != NULL && !ch->closed;
}

void ipc_chan_free(struct ipc_chan **chp)
{
	struct ipc_chan *ch = *chp;
	if (ch == NULL)
		return;
	*chp = NULL;
	event_free(ch->rev);
	event_free(ch->wev);
	while (ch->out_head != NULL) {
		struct ipc_out *o = ch->out_head;
		ch->out_head = o->next;
		if (o->fd >= 0)
			close(o->fd);
		free(o);
	}
	close(ch->fd);
	free(ch->in);
	free(ch);
}
