/* authc.c — smtpd's client of the auth service (see authc.h, authproto.h).
 * Runs in smtpd on its event loop. Hostile input: the service's frames are
 * checked like any peer's (a compromised or confused service must not crash
 * smtpd): an answer must name a request we sent, of the kind we asked;
 * anything else is ignored or ends that request in a tempfail. */
#include "auth/authc.h"

#include "auth/authfail.h"
#include "auth/authproto.h"
#include "auth/passwd.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/log.h"

#include <stdlib.h>
#include <string.h>

#define AUTHC_BUCKETS 256

enum authc_kind { AUTHC_K_STEP, AUTHC_K_EXISTS };

struct authc_req {
	struct authc_req *next;
	uint64_t id;
	enum authc_kind kind;
	authc_step_cb *step_cb;
	authc_exists_cb *exists_cb;
	void *arg;
};

struct authc {
	struct authp_conn *conn; /* NULL once the service is gone */
	struct authc_req *buckets[AUTHC_BUCKETS];
	size_t n_req;
	uint64_t next_id;
	unsigned mechs;
	bool has_users;
	bool ready; /* a MECHS frame came */
};

static struct authc_req **authc_slot(struct authc *c, uint64_t id)
{
	struct authc_req **pp = &c->buckets[id % AUTHC_BUCKETS];
	while (*pp != NULL && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

static struct authc_req *authc_take(struct authc *c, uint64_t id)
{
	struct authc_req **pp = authc_slot(c, id);
	struct authc_req *r = *pp;
	if (r != NULL) {
		*pp = r->next;
		c->n_req--;
	}
	return r;
}

static void authc_finish_tempfail(struct authc_req *r)
{
	if (r->kind == AUTHC_K_STEP) {
		struct authc_step_result res = {.status = AUTHC_TEMPFAIL};
		r->step_cb(r->arg, &res);
	} else {
		r->exists_cb(r->arg, AUTHC_EXISTS_TEMPFAIL);
	}
	free(r);
}

static void authc_on_step_answer(struct authc_req *r, const struct authp_msg *m)
{
	struct authc_step_result res = {.status = AUTHC_TEMPFAIL};
	char user[AUTHP_USER_MAX + 1];
	switch (m->type) {
	case AUTHP_T_CHALLENGE:
		res.status = AUTHC_CHALLENGE;
		res.data = m->data;
		res.len = m->data_len;
		break;
	case AUTHP_T_OK:
		if (m->user == NULL || m->user_len == 0)
			break;
		memcpy(user, m->user, m->user_len);
		user[m->user_len] = '\0';
		res.status = AUTHC_OK;
		res.user = user;
		break;
	case AUTHP_T_FAIL:
		res.status = AUTHC_FAIL;
		res.failures = m->failures > 1000000 ? 1000000 : (unsigned)m->failures;
		res.lockout = m->lockout != 0;
		break;
	case AUTHP_T_LOCKED:
		res.status = AUTHC_LOCKED;
		break;
	case AUTHP_T_MALFORMED:
		res.status = AUTHC_MALFORMED;
		break;
	default:
		break; /* ERROR, or an answer of the wrong kind */
	}
	r->step_cb(r->arg, &res);
}

static void authc_on_frame(void *arg, const struct authp_msg *m, const char *error)
{
	struct authc *c = arg;
	if (error != NULL) {
		log_warn("event=authc_bad_frame error=\"%s\"", error);
		return;
	}
	if (m->type == AUTHP_T_MECHS) {
		c->mechs = (unsigned)(m->mask & 0xf);
		c->has_users = m->users != 0;
		c->ready = true;
		return;
	}
	if (m->type == AUTHP_T_ERROR) {
		char msg[AUTHP_MESSAGE_MAX + 1];
		memcpy(msg, m->message != NULL ? m->message : "", m->message_len);
		msg[m->message_len] = '\0';
		log_warn("event=authc_error req=%llu error=\"%s\"", (unsigned long long)m->req,
		         msg);
	}
	struct authc_req *r = m->req != 0 ? authc_take(c, m->req) : NULL;
	if (r == NULL)
		return; /* cancelled, or never ours */
	if (r->kind == AUTHC_K_EXISTS) {
		enum authc_exists e = AUTHC_EXISTS_TEMPFAIL;
		if (m->type == AUTHP_T_EXISTS)
			e = m->yes != 0 ? AUTHC_YES : AUTHC_NO;
		r->exists_cb(r->arg, e);
	} else {
		authc_on_step_answer(r, m);
	}
	free(r);
}

static void authc_on_closed(void *arg)
{
	struct authc *c = arg;
	log_err("event=authc_closed outstanding=%zu (AUTH answers 454 until restart)", c->n_req);
	authp_conn_free(&c->conn);
	for (size_t i = 0; i < AUTHC_BUCKETS; i++) {
		while (c->buckets[i] != NULL) {
			struct authc_req *r = c->buckets[i];
			c->buckets[i] = r->next;
			c->n_req--;
			authc_finish_tempfail(r);
		}
	}
}

static const struct authp_conn_ops authc_conn_ops = {
    .frame = authc_on_frame,
    .closed = authc_on_closed,
};

struct authc *authc_create(struct event_base *base, int fd)
{
	struct authc *c = xcalloc(1, sizeof(*c));
	c->conn = authp_conn_create(base, fd, &authc_conn_ops, c);
	return c;
}

int authc_wait_ready(struct authc *c, int timeout_ms)
{
	if (!c->ready && c->conn != NULL)
		(void)authp_conn_pump(c->conn, timeout_ms);
	return c->ready ? 0 : -1;
}

void authc_free(struct authc **cp)
{
	struct authc *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	authp_conn_free(&c->conn);
	for (size_t i = 0; i < AUTHC_BUCKETS; i++) {
		while (c->buckets[i] != NULL) {
			struct authc_req *r = c->buckets[i];
			c->buckets[i] = r->next;
			free(r);
		}
	}
	free(c);
}

bool authc_connected(const struct authc *c)
{
	return c->conn != NULL;
}

bool authc_has_users(const struct authc *c)
{
	return c->has_users;
}

unsigned authc_mechs(const struct authc *c)
{
	return c->mechs;
}

uint64_t authc_new_id(struct authc *c)
{
	return ++c->next_id;
}

/* Send a finished frame and register the request it carries. */
static struct authc_req *authc_send(struct authc *c, struct buf *out, size_t st, uint64_t id,
                                    enum authc_kind kind)
{
	if (ctl_frame_end(out, st, AUTHP_FRAME_MAX) < 0 || authp_conn_send(c->conn, out) < 0) {
		if (out->data != NULL)
			passwd_wipe(out->data, out->cap);
		buf_free(out);
		return NULL;
	}
	buf_free(out);
	struct authc_req *r = xcalloc(1, sizeof(*r));
	r->id = id;
	r->kind = kind;
	r->next = c->buckets[id % AUTHC_BUCKETS];
	c->buckets[id % AUTHC_BUCKETS] = r;
	c->n_req++;
	return r;
}

struct authc_req *authc_step(struct authc *c, uint64_t session, uint64_t exchange, int mech,
                             const struct sockaddr_storage *addr, bool has_data, bool bad_base64,
                             const void *data, size_t len, authc_step_cb *cb, void *arg)
{
	if (c->conn == NULL || c->n_req >= AUTHC_REQ_MAX || len > SASL_RESPONSE_MAX)
		return NULL;
	uint64_t id = authc_new_id(c);
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_STEP);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, id);
	ctl_frame_add_u64(&out, AUTHP_F_SESSION, session);
	ctl_frame_add_u64(&out, AUTHP_F_EXCHANGE, exchange);
	if (mech >= 0 && addr != NULL) {
		unsigned char key[AUTHP_ADDR_LEN];
		authfail_addr_key(addr, key);
		ctl_frame_add_u64(&out, AUTHP_F_MECH, (uint64_t)mech);
		ctl_frame_add(&out, AUTHP_F_ADDR, key, sizeof(key));
	}
	uint64_t flags = (has_data ? AUTHP_STEP_DATA : 0) | (bad_base64 ? AUTHP_STEP_BADB64 : 0);
	ctl_frame_add_u64(&out, AUTHP_F_FLAGS, flags);
	if (has_data && !bad_base64 && len > 0)
		ctl_frame_add(&out, AUTHP_F_DATA, data, len);
	struct authc_req *r = authc_send(c, &out, st, id, AUTHC_K_STEP);
	if (r != NULL) {
		r->step_cb = cb;
		r->arg = arg;
	}
	return r;
}

void authc_exchange_end(struct authc *c, uint64_t session, uint64_t exchange,
                        struct authc_req **req)
{
	authc_cancel(c, req);
	if (c->conn == NULL || exchange == 0)
		return;
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_CANCEL);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, authc_new_id(c));
	ctl_frame_add_u64(&out, AUTHP_F_SESSION, session);
	ctl_frame_add_u64(&out, AUTHP_F_EXCHANGE, exchange);
	if (ctl_frame_end(&out, st, AUTHP_FRAME_MAX) == 0)
		(void)authp_conn_send(c->conn, &out);
	buf_free(&out);
}

struct authc_req *authc_user_exists(struct authc *c, const char *address, authc_exists_cb *cb,
                                    void *arg)
{
	if (c->conn == NULL || c->n_req >= AUTHC_REQ_MAX || strlen(address) > AUTHP_NAME_MAX)
		return NULL;
	uint64_t id = authc_new_id(c);
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_USER);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, id);
	ctl_frame_add_str(&out, AUTHP_F_NAME, address);
	struct authc_req *r = authc_send(c, &out, st, id, AUTHC_K_EXISTS);
	if (r != NULL) {
		r->exists_cb = cb;
		r->arg = arg;
	}
	return r;
}

void authc_cancel(struct authc *c, struct authc_req **req)
{
	struct authc_req *r = *req;
	if (r == NULL)
		return;
	*req = NULL;
	struct authc_req *t = authc_take(c, r->id);
	free(t);
}
