/*
 * certs: the server certificate and its key, on the root parent's side.
 * The parent reads what tls-cert and tls-key name (or the self-signed pair
 * it made at the first start) and keeps the PEM text to hand to each new
 * smtp process (IMSG_P_TLS).
 */
#ifndef TERN_CERTS_H
#define TERN_CERTS_H

#include <stddef.h>

#include "lib/util.h"

struct conf;

struct certs {
	struct buf	 chain;		/* PEM: server certificate, then chain */
	struct buf	 key;		/* PEM: its private key */
	char		 origin[8200];	/* the file(s), for the log */
	int		 selfsigned;
	int		 made;		/* self-signed, made just now */
	int		 expired;	/* the server certificate's time is up */
};

void	certs_init(struct certs *);
/* Wipes the PEM text, then frees it. */
void	certs_free(struct certs *);
/*
 * The files tls-cert and tls-key name: read, checked to load and to
 * belong together.  Without tls-cert, c is left empty and 0 returned.
 * -1 with "file:line: ..." in err.
 */
int	certs_load(const struct conf *, struct certs *, char *err,
	    size_t errlen);
/*
 * The self-signed certificate for the hostname in the directory of
 * srs-secret (which must exist): read, or made (P-256, ten years, mode
 * 0600) when missing, damaged, expired or for another hostname.
 */
int	certs_selfsigned(const struct conf *, struct certs *, char *err,
	    size_t errlen);
/* The T_CERT and T_KEY records of IMSG_P_TLS. */
void	certs_records(const struct certs *, struct buf *);

#endif
