/* workq.c — worker-thread pool with completions delivered to a libevent loop
 * through an eventfd. Any process that has an event loop. */
#include "lib/workq.h"
#include "lib/alloc.h"
#include "lib/log.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct workq_job {
	workq_fn *run;
	workq_fn *done;
	void *arg;
	struct workq_job *next;
};

struct workq_list {
	struct workq_job *head;
	struct workq_job *tail;
};

struct workq {
	const char *name;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct workq_list todo;  /* guarded by lock */
	struct workq_list done;  /* guarded by lock */
	bool stopping;           /* guarded by lock */
	size_t pending;          /* loop thread only */
	int efd;
	struct event *ev;
	pthread_t *threads;
	unsigned nthreads;
};

static void workq_list_push(struct workq_list *l, struct workq_job *j)
{
	j->next = NULL;
	if (l->tail != NULL)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
}

static struct workq_job *workq_list_take_all(struct workq_list *l)
{
	struct workq_job *j = l->head;
	l->head = l->tail = NULL;
	return j;
}

static void *workq_thread(void *arg)
{
	struct workq *q = arg;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (q->todo.head == NULL && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		struct workq_job *j = q->todo.head;
		if (j == NULL)
			break; /* stopping and drained */
		q->todo.head = j->next;
		if (q->todo.head == NULL)
			q->todo.tail = NULL;
		pthread_mutex_unlock(&q->lock);
		j->run(j->arg);
		pthread_mutex_lock(&q->lock);
		bool was_empty = q->done.head == NULL;
		workq_list_push(&q->done, j);
		if (was_empty) {
			uint64_t one = 1;
			ssize_t w = write(q->efd, &one, sizeof(one));
			(void)w; /* the counter cannot overflow in practice */
		}
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void workq_run_done(struct workq *q)
{
	pthread_mutex_lock(&q->lock);
	struct workq_job *j = workq_list_take_all(&q->done);
	pthread_mutex_unlock(&q->lock);
	while (j != NULL) {
		struct workq_job *next = j->next;
		q->pending--;
		if (j->done != NULL)
			j->done(j->arg);
		free(j);
		j = next;
	}
}

static void workq_on_event(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	uint64_t n;
	ssize_t r = read(fd, &n, sizeof(n));
	(void)r;
	workq_run_done(arg);
}

struct workq *workq_create(struct event_base *base, unsigned nthreads, const char *name)
{
	struct workq *q = xcalloc(1, sizeof(*q));
	q->name = name;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		log_err("event=workq_error queue=%s error=eventfd", name);
		abort();
	}
	q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, workq_on_event, q);
	event_add(q->ev, NULL);
	q->nthreads = nthreads ? nthreads : 1;
	q->threads = xcalloc(q->nthreads, sizeof(*q->threads));
	for (unsigned i = 0; i < q->nthreads; i++) {
		if (pthread_create(&q->threads[i], NULL, workq_thread, q) != 0) {
			log_err("event=workq_error queue=%s error=pthread_create", name);
			abort();
		}
	}
	return q;
}

void workq_submit(struct workq *q, workq_fn *run, workq_fn *done, void *arg)
{
	/* The lines that led to this job go out before it can run: whoever sees
	 * its effect (a file gone, a Maildir file) finds them in the log. */
	log_thread_flush();
	struct workq_job *j = xmalloc(sizeof(*j));
	j->run = run;
	j->done = done;
	j->arg = arg;
	q->pending++;
	pthread_mutex_lock(&q->lock);
	workq_list_push(&q->todo, j);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

size_t workq_pending(const struct workq *q)
{
	return q->pending;
}

void workq_free(struct workq **qp)
{
	struct workq *q = *qp;
	if (q == NULL)
		return;
	*qp = NULL;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	workq_run_done(q);
	event_free(q->ev);
	close(q->efd);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
}
