/* maildir.h — local delivery into Maildir (tmp -> new, fsync, unique name).
 * Runs on a delivery worker thread of the queue process: it blocks on the
 * disk. The message content was accepted from the network and is hostile,
 * but it is only copied; the mailbox name is derived from a recipient that
 * smtpd already checked, and is checked again here before it touches a path. */
#ifndef HK_DELIVER_MAILDIR_H
#define HK_DELIVER_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>

#define MAILDIR_MAILBOX_MAX 64

/* Map the local part of a recipient to its mailbox directory name: the
 * subaddress ("+tag") is cut, ASCII is lowercased. Fails (-1) for names that
 * cannot be a safe single path component: empty, quoted local parts, a
 * leading '.', '/', or control octets. */
int maildir_mailbox_name(const char *local, char out[MAILDIR_MAILBOX_MAX + 1]);

struct maildir_msg {
	const unsigned char *data; /* the spooled message, CRLF line ends */
	size_t len;
	const char *return_path;  /* envelope sender, "" for <> */
	const char *delivered_to; /* the recipient address as received */
	const char *hostname;     /* for the unique file name */
};

/* Deliver into <root>/<domain>/<mailbox>/Maildir, creating directories as
 * needed. Lines are stored with LF ends (the Maildir convention), headed by
 * Return-Path and Delivered-To. Durable on success: the file and new/ are
 * fsynced. Returns 0, or -1 with a short reason in err (temporary failure). */
int maildir_deliver(const char *root, const char *domain, const char *mailbox,
		    const struct maildir_msg *msg, char *err, size_t errlen);

#endif
