/* authproto.c — the auth frames' decoder and a SOCK_SEQPACKET socket end
 * with an output queue, shared by the auth service (authd.c) and its client
 * in smtpd (authc.c). Each side runs it on its own event loop thread.
 *
 * Hostile input: every packet from the other side. The decoder checks the
 * length field against the packet, the type and every tag against this
 * protocol's tables, each field's kind and bound, and refuses a tag given
 * twice. A packet longer than AUTHP_FRAME_MAX is refused from MSG_TRUNC
 * without being looked at. Frames carry passwords: buffers are wiped. */
#include "auth/authproto.h"

#include "auth/passwd.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

enum authp_kind { AUTHP_K_NONE = 0, AUTHP_K_U64, AUTHP_K_STR, AUTHP_K_BYTES };

static const struct {
	unsigned char kind;
	size_t max; /* for str and bytes */
} authp_tags[AUTHP_F_MAX + 1] = {
    [AUTHP_F_REQ] = {AUTHP_K_U64, 8},
    [AUTHP_F_SESSION] = {AUTHP_K_U64, 8},
    [AUTHP_F_EXCHANGE] = {AUTHP_K_U64, 8},
    [AUTHP_F_MECH] = {AUTHP_K_U64, 8},
    [AUTHP_F_ADDR] = {AUTHP_K_BYTES, AUTHP_ADDR_LEN},
    [AUTHP_F_DATA] = {AUTHP_K_BYTES, SASL_RESPONSE_MAX},
    [AUTHP_F_FLAGS] = {AUTHP_K_U64, 8},
    [AUTHP_F_USER] = {AUTHP_K_STR, AUTHP_USER_MAX},
    [AUTHP_F_FAILURES] = {AUTHP_K_U64, 8},
    [AUTHP_F_LOCKOUT] = {AUTHP_K_U64, 8},
    [AUTHP_F_NAME] = {AUTHP_K_STR, AUTHP_NAME_MAX},
    [AUTHP_F_MESSAGE] = {AUTHP_K_STR, AUTHP_MESSAGE_MAX},
    [AUTHP_F_MASK] = {AUTHP_K_U64, 8},
    [AUTHP_F_USERS] = {AUTHP_K_U64, 8},
    [AUTHP_F_YES] = {AUTHP_K_U64, 8},
};

bool authp_type_is_request(uint8_t type)
{
	return type >= AUTHP_T_STEP && type <= AUTHP_T_USER;
}

static bool authp_type_known(uint8_t type)
{
	return authp_type_is_request(type) || (type >= AUTHP_T_MECHS && type <= AUTHP_T_ERROR);
}

static uint32_t authp_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void authp_set(struct authp_msg *m, const struct ctl_field *f)
{
	uint64_t v = ctl_field_u64(f);
	switch ((enum authp_tag)f->tag) {
	case AUTHP_F_REQ:
		m->req = v;
		break;
	case AUTHP_F_SESSION:
		m->session = v;
		break;
	case AUTHP_F_EXCHANGE:
		m->exchange = v;
		break;
	case AUTHP_F_MECH:
		m->mech = v;
		break;
	case AUTHP_F_ADDR:
		m->addr = f->p;
		break;
	case AUTHP_F_DATA:
		m->data = f->p;
		m->data_len = f->len;
		break;
	case AUTHP_F_FLAGS:
		m->flags = v;
		break;
	case AUTHP_F_USER:
		m->user = (const char *)f->p;
		m->user_len = f->len;
		break;
	case AUTHP_F_FAILURES:
		m->failures = v;
		break;
	case AUTHP_F_LOCKOUT:
		m->lockout = v;
		break;
	case AUTHP_F_NAME:
		m->name = (const char *)f->p;
		m->name_len = f->len;
		break;
	case AUTHP_F_MESSAGE:
		m->message = (const char *)f->p;
		m->message_len = f->len;
		break;
	case AUTHP_F_MASK:
		m->mask = v;
		break;
	case AUTHP_F_USERS:
		m->users = v;
		break;
	case AUTHP_F_YES:
		m->yes = v;
		break;
	}
}

static const char *authp_field_check(const struct authp_msg *m, const struct ctl_field *f)
{
	if (f->tag == 0 || f->tag > AUTHP_F_MAX || authp_tags[f->tag].kind == AUTHP_K_NONE)
		return "unknown field tag";
	if ((m->has & (1u << f->tag)) != 0)
		return "field given twice";
	switch (authp_tags[f->tag].kind) {
	case AUTHP_K_U64:
		return f->len == 8 ? NULL : "number field is not 8 octets";
	case AUTHP_K_STR:
		if (memchr(f->p, '\0', f->len) != NULL)
			return "NUL in a string field";
		/* fall through */
	default:
		if (f->len > authp_tags[f->tag].max)
			return "field too long";
		if (f->tag == AUTHP_F_ADDR && f->len != AUTHP_ADDR_LEN)
			return "address field is not 16 octets";
		return NULL;
	}
}

int authp_decode(const void *p, size_t len, struct authp_msg *m, const char **error_r)
{
	const unsigned char *b = p;
	memset(m, 0, sizeof(*m));
	if (len < CTL_HDR_LEN || len > AUTHP_FRAME_MAX) {
		*error_r = "bad packet size";
		return -1;
	}
	if ((size_t)authp_be32(b) != len - 4) {
		*error_r = "length field does not match the packet";
		return -1;
	}
	if (!authp_type_known(b[4])) {
		*error_r = "unknown frame type";
		return -1;
	}
	struct ctl_frame f = {.type = b[4], .body = b + CTL_HDR_LEN, .body_len = len - CTL_HDR_LEN};
	struct ctl_field fld;
	size_t off = 0;
	m->type = f.type;
	while (off < f.body_len) {
		if (ctl_field_next(&f, &off, &fld) == 0) {
			*error_r = "field runs past the frame";
			return -1;
		}
		const char *err = authp_field_check(m, &fld);
		if (err != NULL) {
			*error_r = err;
			return -1;
		}
		m->has |= 1u << fld.tag;
		authp_set(m, &fld);
	}
	return 0;
}

/* ---- the socket end ---- */

#define AUTHP_OUTQ_MAX 4096 /* frames waiting for the socket */

struct authp_out {
	struct authp_out *next;
	size_t len;
	unsigned char data[];
};

struct authp_conn {
	int fd;
	struct event *rev, *wev;
	const struct authp_conn_ops *ops;
	void *arg;
	struct authp_out *head, **tailp;
	size_t nout;
	bool closed;      /* peer gone: sends refused */
	bool dispatching; /* inside ops->frame: a free waits for the end */
	bool free_later;
	unsigned char *rbuf; /* AUTHP_FRAME_MAX + 1 */
};

static void authp_out_free(struct authp_out *o)
{
	passwd_wipe(o->data, o->len);
	free(o);
}

static void authp_conn_flush(struct authp_conn *c)
{
	while (c->head != NULL) {
		struct authp_out *o = c->head;
		ssize_t n = send(c->fd, o->data, o->len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			event_add(c->wev, NULL);
			return;
		}
		c->head = o->next;
		if (c->head == NULL)
			c->tailp = &c->head;
		c->nout--;
		authp_out_free(o);
		if (n < 0) { /* EPIPE, ECONNRESET: the read side reports it */
			c->closed = true;
			while (c->head != NULL) {
				o = c->head;
				c->head = o->next;
				authp_out_free(o);
			}
			c->tailp = &c->head;
			c->nout = 0;
			return;
		}
	}
}

int authp_conn_send(struct authp_conn *c, struct buf *frame)
{
	int r = -1;
	if (!c->closed && c->nout < AUTHP_OUTQ_MAX && frame->len > 0) {
		struct authp_out *o = xmalloc(sizeof(*o) + frame->len);
		o->next = NULL;
		o->len = frame->len;
		memcpy(o->data, frame->data, frame->len);
		*c->tailp = o;
		c->tailp = &o->next;
		c->nout++;
		if (c->nout == 1)
			authp_conn_flush(c);
		r = 0;
	} else if (!c->closed && frame->len > 0) {
		/* The peer stopped reading: an answer dropped silently would
		 * leave a request waiting for ever. Close instead; the read
		 * event then reports it like any close. */
		c->closed = true;
		(void)shutdown(c->fd, SHUT_RDWR);
	}
	if (frame->data != NULL)
		passwd_wipe(frame->data, frame->cap);
	buf_reset(frame);
	return r;
}

/* One packet: 1 dispatched, 0 none there, -1 closed. */
static int authp_conn_read_one(struct authp_conn *c)
{
	struct iovec iov = {.iov_base = c->rbuf, .iov_len = AUTHP_FRAME_MAX + 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	if (n <= 0) {
		c->closed = true;
		return -1;
	}
	struct authp_msg m;
	const char *err = NULL;
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || (size_t)n > AUTHP_FRAME_MAX) {
		memset(&m, 0, sizeof(m));
		err = "frame too large";
	} else {
		(void)authp_decode(c->rbuf, (size_t)n, &m, &err);
	}
	c->ops->frame(c->arg, &m, err);
	passwd_wipe(c->rbuf, (size_t)n < AUTHP_FRAME_MAX ? (size_t)n : AUTHP_FRAME_MAX);
	return 1;
}

static void authp_conn_really_free(struct authp_conn *c);

/* Dispatch up to a bounded number of packets, so one busy peer cannot
 * starve the loop. */
static int authp_conn_read(struct authp_conn *c)
{
	int r = 0;
	c->dispatching = true;
	for (int i = 0; i < 64 && !c->free_later; i++) {
		r = authp_conn_read_one(c);
		if (r <= 0)
			break;
	}
	c->dispatching = false;
	if (c->free_later) {
		authp_conn_really_free(c);
		return -1;
	}
	if (r < 0) {
		event_del(c->rev);
		c->ops->closed(c->arg); /* the owner frees c */
	}
	return r;
}

static void authp_conn_on_read(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)authp_conn_read(arg);
}

static void authp_conn_on_write(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	authp_conn_flush(arg);
}

struct authp_conn *authp_conn_create(struct event_base *base, int fd,
                                     const struct authp_conn_ops *ops, void *arg)
{
	struct authp_conn *c = xcalloc(1, sizeof(*c));
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	c->fd = fd;
	c->ops = ops;
	c->arg = arg;
	c->tailp = &c->head;
	c->rbuf = xmalloc(AUTHP_FRAME_MAX + 1);
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, authp_conn_on_read, c);
	c->wev = event_new(base, fd, EV_WRITE, authp_conn_on_write, c);
	event_add(c->rev, NULL);
	return c;
}

int authp_conn_pump(struct authp_conn *c, int timeout_ms)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	int n = poll(&pfd, 1, timeout_ms);
	if (n <= 0)
		return 0;
	int r = authp_conn_read(c);
	return r < 0 ? -1 : 1;
}

int authp_conn_fd(const struct authp_conn *c)
{
	return c->fd;
}

static void authp_conn_really_free(struct authp_conn *c)
{
	event_free(c->rev);
	event_free(c->wev);
	while (c->head != NULL) {
		struct authp_out *o = c->head;
		c->head = o->next;
		authp_out_free(o);
	}
	close(c->fd);
	free(c->rbuf);
	free(c);
}

void authp_conn_free(struct authp_conn **cp)
{
	struct authp_conn *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	if (c->dispatching) {
		c->free_later = true;
		return;
	}
	authp_conn_really_free(c);
}
