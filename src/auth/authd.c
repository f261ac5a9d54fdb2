/* authd.c — the auth service: SASL exchanges, password checks, AUTH failure
 * counting and user lookups for smtpd, over the frames of auth/authproto.h.
 *
 * Runs on an event loop (smtpd's today, the `auth` process's after the
 * split); password checks run on its own worker threads ("authd"). Hostile
 * input: every frame from a client (which parses SMTP and may be
 * compromised): fields are bounded by the decoder, exchanges and requests
 * in flight by AUTHD_XCHG_MAX and AUTHD_REQ_MAX per client, and a client
 * that keeps sending malformed frames is dropped. Nothing here logs a
 * name, password or response; responses and passwords are wiped.
 *
 * An exchange is keyed by the client's (session, exchange) ids. Its first
 * STEP reserves a guess for the client address in the failure table before
 * anything is evaluated (issue 8: parallel sessions share one budget); the
 * guess goes back when the exchange succeeds, is malformed, or is cancelled
 * before a credential was checked. A failure answers after the delay that
 * the address's failures earn, so every smtpd process sees the same
 * slow-down, and says whether the address is now locked out. */
#include "auth/authd.h"
#include "obs/sbxstore.h"

#include "auth/authfail.h"
#include "auth/authproto.h"
#include "auth/passwd.h"
#include "auth/sasl.h"
#include "auth/users.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/workq.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#define AUTHD_DELAY_STEP_MS 200 /* each failure of an address delays its 535 more */
#define AUTHD_DELAY_STEPS_MAX 10
#define AUTHD_AUTHFAIL_SLOTS 65536 /* 2 MiB, as smtpd had (auth/authfail.h) */
#define AUTHD_BUCKETS 1024

/* One users table and what is prepared from it; exchanges hold a reference
 * so a reload never pulls a table from under one. */
struct authd_gen {
	struct users *users;
	struct sasl_ctx *ctx;
	unsigned mask; /* SASL_MECH_BIT()s offered */
	unsigned refs;
};

struct authd_client;

struct authd_xchg {
	struct authd_client *cl; /* NULL once orphaned (client gone, cancelled) */
	struct authd_xchg *hnext;
	uint64_t session, exchange;
	uint64_t req; /* the STEP being answered, 0 when idle */
	struct authd_gen *gen;
	struct sasl_server *sasl; /* NULL after a failure (waiting for the delay) */
	struct sockaddr_storage addr;
	enum sasl_mech mech;
	bool verifying; /* a password is out on a worker */
	unsigned failures;
	struct event *delay_ev;
};

struct authd_client {
	struct authd *d;
	struct authp_conn *conn;
	struct authd_client *next, *prev;
	struct authd_xchg *buckets[AUTHD_BUCKETS];
	size_t n_xchg, n_req;
	unsigned errors;
};

struct authd {
	struct event_base *base;
	const struct conf *conf;
	struct authd_gen *gen;
	struct workq *wq;
	struct authfail *authfail;
	struct authd_client *clients;
	size_t n_clients;
	unsigned delay_step;
};

struct authd_verify {
	struct authd_xchg *x;
	char *stored, *password;
	size_t password_len;
	bool ok;
};

static uint64_t authd_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- generations of the users table ---- */

/* The whole server is a sandbox that takes any login (sandbox.auth any):
 * the login names the inbox, the password is not checked. */
static bool authd_any_login(const struct conf *conf)
{
	return conf->sandbox.enabled && conf->sandbox.auth == CONF_SANDBOX_AUTH_ANY;
}

static struct authd_gen *authd_gen_create(const struct conf *conf, struct users *users)
{
	const struct conf_auth *ca = &conf->auth;
	struct authd_gen *g = xcalloc(1, sizeof(*g));
	g->users = users;
	g->ctx = sasl_ctx_create(users, conf->hostname);
	g->refs = 1;
	/* auth.mechanisms, or else what works for every user: clients take
	 * the strongest offered and do not retry (issue 8). */
	g->mask = ca->n_mechanisms == 0 ? sasl_ctx_usable(g->ctx) : 0;
	for (size_t i = 0; i < ca->n_mechanisms; i++) {
		enum sasl_mech m;
		if (sasl_mech_parse(ca->mechanisms[i], strlen(ca->mechanisms[i]), &m) == 0)
			g->mask |= SASL_MECH_BIT(m);
	}
	/* sandbox.auth any: every login succeeds, so only the mechanisms
	 * that carry the password itself (no secret to compute a proof from). */
	if (authd_any_login(conf))
		g->mask = SASL_MECH_BIT(SASL_PLAIN) | SASL_MECH_BIT(SASL_LOGIN);
	return g;
}

static void authd_gen_unref(struct authd_gen **gp)
{
	struct authd_gen *g = *gp;
	*gp = NULL;
	if (g == NULL || --g->refs > 0)
		return;
	sasl_ctx_free(&g->ctx);
	users_free(&g->users);
	free(g);
}

/* ---- answers ---- */

static void authd_send(struct authd_client *cl, struct buf *out, size_t start)
{
	if (ctl_frame_end(out, start, AUTHP_FRAME_MAX) == 0)
		(void)authp_conn_send(cl->conn, out);
	buf_free(out);
}

static void authd_answer(struct authd_client *cl, uint8_t type, uint64_t req)
{
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, type);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, req);
	authd_send(cl, &out, st);
}

static void authd_error(struct authd_client *cl, uint64_t req, const char *msg)
{
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_ERROR);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, req);
	ctl_frame_add_str(&out, AUTHP_F_MESSAGE, msg);
	authd_send(cl, &out, st);
}

static void authd_send_mechs(struct authd_client *cl)
{
	struct authd_gen *g = cl->d->gen;
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_MECHS);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, 0);
	ctl_frame_add_u64(&out, AUTHP_F_MASK, g->mask);
	ctl_frame_add_u64(&out, AUTHP_F_USERS, g->users != NULL || authd_any_login(cl->d->conf));
	authd_send(cl, &out, st);
}

/* ---- exchanges ---- */

static size_t authd_bucket(uint64_t session, uint64_t exchange)
{
	uint64_t h = (session ^ (exchange * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
	return (size_t)(h >> 54) % AUTHD_BUCKETS;
}

static struct authd_xchg **authd_xchg_slot(struct authd_client *cl, uint64_t session,
                                           uint64_t exchange)
{
	struct authd_xchg **pp = &cl->buckets[authd_bucket(session, exchange)];
	while (*pp != NULL && ((*pp)->session != session || (*pp)->exchange != exchange))
		pp = &(*pp)->hnext;
	return pp;
}

static void authd_release(struct authd_xchg *x, struct authd *d)
{
	authfail_release(d->authfail, &x->addr, authd_now_ms(), d->conf->auth.failure_window);
}

static void authd_xchg_destroy(struct authd_xchg *x)
{
	sasl_server_free(&x->sasl);
	if (x->delay_ev != NULL)
		event_free(x->delay_ev);
	authd_gen_unref(&x->gen);
	free(x);
}

/* Take x out of its client's table; an exchange whose password is out on a
 * worker is orphaned and freed when the worker is done. */
static void authd_xchg_end(struct authd_xchg *x)
{
	struct authd_client *cl = x->cl;
	if (cl != NULL) {
		struct authd_xchg **pp = authd_xchg_slot(cl, x->session, x->exchange);
		if (*pp == x)
			*pp = x->hnext;
		cl->n_xchg--;
		if (x->req != 0)
			cl->n_req--;
		x->cl = NULL;
		x->req = 0;
	}
	if (!x->verifying)
		authd_xchg_destroy(x);
}

/* Client gone or CANCEL: an exchange left midway made no guess. */
static void authd_xchg_cancel(struct authd_xchg *x, struct authd *d)
{
	if (x->sasl != NULL && sasl_server_midway(x->sasl))
		authd_release(x, d);
	authd_xchg_end(x);
}

static void authd_on_delay(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct authd_xchg *x = arg;
	struct authd_client *cl = x->cl;
	struct authd *d = cl->d;
	unsigned now =
	    authfail_count(d->authfail, &x->addr, authd_now_ms(), d->conf->auth.failure_window);
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_FAIL);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, x->req);
	ctl_frame_add_u64(&out, AUTHP_F_FAILURES, x->failures);
	ctl_frame_add_u64(&out, AUTHP_F_LOCKOUT, now >= d->conf->auth.max_failures);
	authd_send(cl, &out, st);
	authd_xchg_end(x);
}

/* The guess was counted when the exchange began: delay the answer by what
 * the address's failures earn. */
static void authd_failed(struct authd_xchg *x, struct authd *d)
{
	unsigned n =
	    authfail_count(d->authfail, &x->addr, authd_now_ms(), d->conf->auth.failure_window);
	if (n == 0)
		n = 1;
	x->failures = n;
	uint64_t ms =
	    (uint64_t)(n < AUTHD_DELAY_STEPS_MAX ? n : AUTHD_DELAY_STEPS_MAX) * d->delay_step;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
	                     .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
	sasl_server_free(&x->sasl);
	x->delay_ev = evtimer_new(d->base, authd_on_delay, x);
	evtimer_add(x->delay_ev, &tv);
}

static void authd_verify_run(void *arg)
{
	struct authd_verify *v = arg;
	v->ok = passwd_verify(v->stored, v->password, v->password_len) == 1;
	passwd_wipe(v->password, v->password_len);
}

static void authd_result(struct authd_xchg *x, enum sasl_result r, struct buf *chal);

static void authd_verify_done(void *arg)
{
	struct authd_verify *v = arg;
	struct authd_xchg *x = v->x;
	bool ok = v->ok;
	free(v->password);
	free(v->stored);
	free(v);
	x->verifying = false;
	if (x->cl == NULL) { /* cancelled meanwhile: the guess stays counted */
		authd_xchg_destroy(x);
		return;
	}
	authd_result(x, sasl_server_verified(x->sasl, ok), NULL);
}

static void authd_verify_start(struct authd_xchg *x)
{
	struct authd_verify *v = xcalloc(1, sizeof(*v));
	const char *pw = sasl_server_password(x->sasl);
	v->x = x;
	v->stored = xstrdup(sasl_server_stored(x->sasl));
	v->password_len = strlen(pw);
	v->password = xmemdup(pw, v->password_len + 1);
	x->verifying = true;
	workq_submit(x->cl->d->wq, authd_verify_run, authd_verify_done, v);
}

static void authd_result(struct authd_xchg *x, enum sasl_result r, struct buf *chal)
{
	struct authd_client *cl = x->cl;
	struct authd *d = cl->d;
	struct buf out;
	size_t st;

	switch (r) {
	case SASL_R_CONTINUE:
		buf_init(&out, AUTHP_FRAME_MAX);
		st = ctl_frame_begin(&out, AUTHP_T_CHALLENGE);
		ctl_frame_add_u64(&out, AUTHP_F_REQ, x->req);
		ctl_frame_add(&out, AUTHP_F_DATA, chal->data, chal->len);
		authd_send(cl, &out, st);
		x->req = 0;
		cl->n_req--;
		return;
	case SASL_R_VERIFY:
		if (authd_any_login(d->conf) && sasl_server_user(x->sasl) != NULL &&
		    sbx_inbox_valid(sasl_server_user(x->sasl))) {
			/* Not a user of the users file, so not SASL_R_OK from
			 * sasl_server_verified(): the login is the inbox. A
			 * login no inbox can be named after (spaces, controls,
			 * non-ASCII, over 255 octets: no token could open it)
			 * goes on to the users file, and so fails there. */
			authd_release(x, d);
			buf_init(&out, AUTHP_FRAME_MAX);
			st = ctl_frame_begin(&out, AUTHP_T_OK);
			ctl_frame_add_u64(&out, AUTHP_F_REQ, x->req);
			ctl_frame_add_str(&out, AUTHP_F_USER, sasl_server_user(x->sasl));
			authd_send(cl, &out, st);
			authd_xchg_end(x);
			return;
		}
		authd_verify_start(x);
		return;
	case SASL_R_OK:
		authd_release(x, d); /* a login is not a failure */
		buf_init(&out, AUTHP_FRAME_MAX);
		st = ctl_frame_begin(&out, AUTHP_T_OK);
		ctl_frame_add_u64(&out, AUTHP_F_REQ, x->req);
		ctl_frame_add_str(&out, AUTHP_F_USER, sasl_server_user(x->sasl));
		authd_send(cl, &out, st);
		authd_xchg_end(x);
		return;
	case SASL_R_FAIL:
		authd_failed(x, d);
		return;
	case SASL_R_MALFORMED: /* no guess was evaluated */
		authd_release(x, d);
		authd_answer(cl, AUTHP_T_MALFORMED, x->req);
		authd_xchg_end(x);
		return;
	}
}

/* The first STEP of an exchange: reserve the guess, then start SASL. */
static struct authd_xchg *authd_xchg_begin(struct authd_client *cl, const struct authp_msg *m)
{
	struct authd *d = cl->d;
	if (!AUTHP_HAS(m, AUTHP_F_ADDR) || m->mech > SASL_SCRAM_SHA_256 ||
	    (d->gen->mask & SASL_MECH_BIT(m->mech)) == 0 ||
	    (d->gen->users == NULL && !authd_any_login(d->conf))) {
		authd_error(cl, m->req, "mechanism not offered");
		return NULL;
	}
	if (*authd_xchg_slot(cl, m->session, m->exchange) != NULL) {
		authd_error(cl, m->req, "exchange exists");
		return NULL;
	}
	if (cl->n_xchg >= AUTHD_XCHG_MAX) {
		authd_error(cl, m->req, "too many exchanges");
		return NULL;
	}
	struct authd_xchg *x = xcalloc(1, sizeof(*x));
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&x->addr;
	a6->sin6_family = AF_INET6;
	memcpy(&a6->sin6_addr, m->addr, AUTHP_ADDR_LEN);
	if (authfail_reserve(d->authfail, &x->addr, authd_now_ms(), d->conf->auth.failure_window,
	                     (unsigned)d->conf->auth.max_failures) < 0) {
		free(x);
		authd_answer(cl, AUTHP_T_LOCKED, m->req);
		return NULL;
	}
	x->session = m->session;
	x->exchange = m->exchange;
	x->mech = (enum sasl_mech)m->mech;
	x->gen = d->gen;
	x->gen->refs++;
	x->sasl = sasl_server_create(x->mech, x->gen->ctx);
	x->cl = cl;
	x->hnext = cl->buckets[authd_bucket(x->session, x->exchange)];
	cl->buckets[authd_bucket(x->session, x->exchange)] = x;
	cl->n_xchg++;
	return x;
}

static void authd_on_step(struct authd_client *cl, const struct authp_msg *m)
{
	struct authd_xchg *x;
	if (!AUTHP_HAS(m, AUTHP_F_SESSION) || !AUTHP_HAS(m, AUTHP_F_EXCHANGE)) {
		authd_error(cl, m->req, "missing field");
		return;
	}
	if (AUTHP_HAS(m, AUTHP_F_MECH)) {
		x = authd_xchg_begin(cl, m);
		if (x == NULL)
			return;
	} else {
		x = *authd_xchg_slot(cl, m->session, m->exchange);
		if (x == NULL || x->req != 0 || x->sasl == NULL || x->verifying) {
			authd_error(cl, m->req, x == NULL ? "unknown exchange" : "exchange busy");
			return;
		}
	}
	x->req = m->req;
	cl->n_req++;
	if ((m->flags & AUTHP_STEP_BADB64) != 0) {
		/* The client could not decode the response: the exchange ends
		 * with no guess made (smtpd answers 501). */
		authd_result(x, SASL_R_MALFORMED, NULL);
		return;
	}
	struct buf chal;
	buf_init(&chal, AUTHP_FRAME_MAX - 64);
	bool has_data = (m->flags & AUTHP_STEP_DATA) != 0;
	enum sasl_result r = sasl_server_step(x->sasl, has_data, has_data ? m->data : NULL,
	                                      has_data ? m->data_len : 0, &chal);
	authd_result(x, r, &chal);
	buf_free(&chal);
}

static void authd_on_user(struct authd_client *cl, const struct authp_msg *m)
{
	const char *at = m->name != NULL ? memrchr(m->name, '@', m->name_len) : NULL;
	if (at == NULL || at == m->name) {
		authd_error(cl, m->req, "NAME is not local@domain");
		return;
	}
	char local[AUTHP_NAME_MAX + 1], domain[AUTHP_NAME_MAX + 1];
	size_t llen = (size_t)(at - m->name), dlen = m->name_len - llen - 1;
	memcpy(local, m->name, llen);
	local[llen] = '\0';
	memcpy(domain, at + 1, dlen);
	domain[dlen] = '\0';
	bool yes = users_exists(cl->d->gen->users, local, domain);
	struct buf out;
	buf_init(&out, AUTHP_FRAME_MAX);
	size_t st = ctl_frame_begin(&out, AUTHP_T_EXISTS);
	ctl_frame_add_u64(&out, AUTHP_F_REQ, m->req);
	ctl_frame_add_u64(&out, AUTHP_F_YES, yes);
	authd_send(cl, &out, st);
}

static void authd_client_free(struct authd_client *cl);

static void authd_on_frame(void *arg, const struct authp_msg *m, const char *error)
{
	struct authd_client *cl = arg;
	if (error == NULL && !authp_type_is_request(m->type))
		error = "not a request";
	if (error == NULL && (!AUTHP_HAS(m, AUTHP_F_REQ) || m->req == 0))
		error = "no request id";
	if (error != NULL) {
		log_warn("event=authd_bad_frame error=\"%s\"", error);
		if (++cl->errors > AUTHD_ERRORS_MAX) {
			authd_client_free(cl);
			return;
		}
		authd_error(cl, m->req, error);
		return;
	}
	if (m->type == AUTHP_T_CANCEL) {
		struct authd_xchg *x = *authd_xchg_slot(cl, m->session, m->exchange);
		if (x != NULL)
			authd_xchg_cancel(x, cl->d);
		return;
	}
	if (cl->n_req >= AUTHD_REQ_MAX) {
		authd_error(cl, m->req, "too many requests");
		return;
	}
	if (m->type == AUTHP_T_STEP)
		authd_on_step(cl, m);
	else
		authd_on_user(cl, m);
}

static void authd_on_closed(void *arg)
{
	authd_client_free(arg);
}

static const struct authp_conn_ops authd_conn_ops = {
    .frame = authd_on_frame,
    .closed = authd_on_closed,
};

static void authd_client_free(struct authd_client *cl)
{
	struct authd *d = cl->d;
	for (size_t i = 0; i < AUTHD_BUCKETS; i++) {
		while (cl->buckets[i] != NULL)
			authd_xchg_cancel(cl->buckets[i], d);
	}
	authp_conn_free(&cl->conn);
	if (cl->prev != NULL)
		cl->prev->next = cl->next;
	else
		d->clients = cl->next;
	if (cl->next != NULL)
		cl->next->prev = cl->prev;
	d->n_clients--;
	free(cl);
}

/* ---- the service ---- */

struct authd *authd_create(struct event_base *base, const struct conf *conf, struct users *users)
{
	struct authd *d = xcalloc(1, sizeof(*d));
	d->base = base;
	d->conf = conf;
	d->gen = authd_gen_create(conf, users);
	d->wq = workq_create(base, 2, "authd");
	d->authfail = authfail_create(AUTHD_AUTHFAIL_SLOTS, NULL);
	d->delay_step = AUTHD_DELAY_STEP_MS;
	return d;
}

void authd_add_client(struct authd *d, int fd)
{
	struct authd_client *cl = xcalloc(1, sizeof(*cl));
	cl->d = d;
	cl->conn = authp_conn_create(d->base, fd, &authd_conn_ops, cl);
	cl->next = d->clients;
	if (d->clients != NULL)
		d->clients->prev = cl;
	d->clients = cl;
	d->n_clients++;
	authd_send_mechs(cl);
}

void authd_set_users(struct authd *d, struct users *users)
{
	authd_gen_unref(&d->gen);
	d->gen = authd_gen_create(d->conf, users);
	for (struct authd_client *cl = d->clients; cl != NULL; cl = cl->next)
		authd_send_mechs(cl);
}

size_t authd_client_count(const struct authd *d)
{
	return d->n_clients;
}

void authd_set_delay_step_for_test(struct authd *d, unsigned ms)
{
	d->delay_step = ms;
}

void authd_free(struct authd **dp)
{
	struct authd *d = *dp;
	if (d == NULL)
		return;
	*dp = NULL;
	while (d->clients != NULL)
		authd_client_free(d->clients);
	workq_free(&d->wq); /* the orphaned exchanges' checks end and free them */
	authfail_free(&d->authfail);
	authd_gen_unref(&d->gen);
	free(d);
}
