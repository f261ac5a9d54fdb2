/* maildir.h — local delivery into Maildir (tmp -> new, fsync, unique name).
 * Runs on a delivery worker thread of the queue process: it blocks on the
 * disk. The message content was accepted from the network and is hostile,
 * but it is only copied; the mailbox name is derived from a recipient that
 * smtpd already checked, and is checked again here before it touches a path. */
#ifndef HK_DELIVER_MAILDIR_H
#define HK_DELIVER_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAILDIR_MAILBOX_MAX 64

/* Map the local part of a recipient to its mailbox directory name: the
 * subaddress ("+tag") is cut, ASCII is lowercased. Fails (-1) for names that
 * cannot be a safe single path component: empty, quoted local parts, a
 * leading '.', '/', or control octets. */
int maildir_mailbox_name(const char *local, char out[MAILDIR_MAILBOX_MAX + 1]);

struct maildir_msg {
	/* The spooled message, CRLF line ends: in memory (data, len), or,
	 * with data NULL, len octets of fd from off (the spool file, read with
	 * pread through a MAILDIR_WINDOW buffer: memory does not grow with the
	 * message). */
	const unsigned char *data;
	size_t len;
	int fd;
	uint64_t off;
	/* For the fd source: the content's size with CRLF turned into LF
	 * (maildir_lf_size, once per message, not per recipient), for the
	 * file name's S=, which must be known before the copy is written.
	 * Ignored for data in memory (counted here). */
	uint64_t lf_len;
	const char *return_path;  /* envelope sender, "" for <> */
	const char *delivered_to; /* the recipient address as received */
	const char *hostname;     /* for the unique file name */
	/* The file name's unique part, derived from the queue id and the
	 * recipient (maildir_unique_for), so that a delivery repeated after a
	 * crash finds its earlier copy; NULL for a time-and-random name. */
	const char *unique;
	/* Also look for the earlier copy in cur/ (a mail client may have moved
	 * it there): a directory scan, only for a message that may have been
	 * delivered before (recovered after a crash, or a retry). */
	bool search_cur;
	/* The message's first attempt in this process, never recovered nor
	 * tried before: no earlier copy can exist, so none is looked for (no
	 * stat of new/, no stale tmp/ file to remove). */
	bool fresh;
	/* A Maildir++ folder of the mailbox (".Junk"), NULL for the inbox. */
	const char *folder;
};

#define MAILDIR_UNIQUE_MAX 64
#define MAILDIR_WINDOW 65536 /* octets read (and written) at a time */

/* The size of msg's content once its CRLFs are LFs: what the file holds
 * after our two header lines. 0, or -1 on a read error (errno). */
int maildir_lf_size(const struct maildir_msg *msg, uint64_t *size_r);

/* The unique part of a repeatable file name: "<arrival seconds>.Q<qid>R<rcpt
 * index>" (time first, as the Maildir convention sorts). */
void maildir_unique_for(uint64_t arrival_us, const char *qid, size_t rcpt_index,
			char out[MAILDIR_UNIQUE_MAX]);

/* Deliver into <root>/<domain>/<mailbox>/Maildir, creating directories as
 * needed. Lines are stored with LF ends (the Maildir convention), headed by
 * Return-Path and Delivered-To. Durable on success: the file and new/ are
 * fsynced. With msg->unique set, a file of that name already in new/ (or,
 * with search_cur, in cur/) is an earlier delivery of this very copy: it is
 * kept and nothing is written (returns 1). Returns 0 when delivered, or -1
 * with a short reason in err (temporary failure). */
int maildir_deliver(const char *root, const char *domain, const char *mailbox,
		    const struct maildir_msg *msg, char *err, size_t errlen);
/* How many fsyncs of new/ directories ran in this process: deliveries into
 * one Maildir at once share them (group commit). For tests and metrics. */
uint64_t maildir_dir_syncs(void);

#endif
