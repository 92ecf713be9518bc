/*
 * role: the start of an exec'd role process (`ternd -X smtp|queue|vault`).
 * The parent forked and exec'd it with descriptors 0-2 and its channel
 * (PROC_PARENT_FD) alone; everything else arrives over that channel before
 * IMSG_P_GO: the configuration text and identity (IMSG_P_INIT), listening
 * and control sockets (IMSG_P_FD), peer channels (IMSG_P_PEER), the
 * credential store's virtual account names (IMSG_P_ACCOUNTS, smtp and
 * queue), for the vault its secrets, and for smtp the TLS certificate
 * chain and key (IMSG_P_TLS), which it loads from memory.  The role then
 * parses the configuration itself, drops to the unprivileged user and
 * enters its main loop, which confines itself (lib/confine.c) once its own
 * set-up is done.
 */
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/dkim.h"
#include "conf/conf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/util.h"
#include "queue/resolve.h"
#include "smtpd/role.h"

#define ROLE_START_MS	30000	/* the parent sends everything at once */
#define ROLE_FDS_MAX	64

struct role_init {
	struct buf	 conf;		/* IMSG_P_INIT: config text */
	struct buf	 secrets;	/* IMSG_P_SECRETS (vault) */
	struct buf	 tls;		/* IMSG_P_TLS (smtp): chain and key */
	char		 basedir[4096];
	char		 self[256];	/* daemon started by a normal user */
	uint64_t	 flags, uid, gid;
	struct lsock	 ls[ROLE_FDS_MAX];
	size_t		 nls;
	int		 submitfd, controlfd;
	int		 queuefd, smtpfd, vaultfd;
	int		 peers[ROLE_FDS_MAX];	/* smtp channels (vault) */
	size_t		 npeers;
};

static void
role_init_msg(struct role_init *ri, struct rec_reader *rd)
{
	struct dkim_keyinfo ki;
	struct rec r;
	char *s;

	while (rec_next(rd, &r) == 1) {
		switch (r.tag) {
		case T_CONF:
			buf_append(&ri->conf, r.data, r.len);
			break;
		case T_FLAGS:
			rec_u64(&r, &ri->flags);
			break;
		case T_UID:
			rec_u64(&r, &ri->uid);
			break;
		case T_GID:
			rec_u64(&r, &ri->gid);
			break;
		case T_DKIM:	/* a signing key's public facts (smtp) */
			if (dkim_keyinfo_parse((const char *)r.data, r.len,
			    &ki) == 0)
				dkim_keys_add(&ki);
			break;
		case T_PATH:
		case T_USER:
			if ((s = rec_str(&r, 4095)) == NULL)
				break;
			if (r.tag == T_PATH)
				str_copy(ri->basedir, s, sizeof(ri->basedir));
			else
				str_copy(ri->self, s, sizeof(ri->self));
			free(s);
			break;
		}
	}
}

/* T_KIND names what a descriptor is; T_INDEX a listener's index. */
static void
role_fd_msg(struct role_init *ri, int type, struct rec_reader *rd, int fd)
{
	char kind[32] = "";
	uint64_t index = 0;
	struct rec r;
	char *s;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_KIND && (s = rec_str(&r, sizeof(kind) - 1))) {
			str_copy(kind, s, sizeof(kind));
			free(s);
		} else if (r.tag == T_INDEX)
			rec_u64(&r, &index);
	}
	if (type == IMSG_P_FD && strcmp(kind, FD_LISTENER) == 0 &&
	    ri->nls < ROLE_FDS_MAX) {
		ri->ls[ri->nls].fd = fd;
		ri->ls[ri->nls++].listener = (size_t)index;
	} else if (type == IMSG_P_FD && strcmp(kind, FD_SUBMIT) == 0)
		ri->submitfd = fd;
	else if (type == IMSG_P_FD && strcmp(kind, FD_CONTROL) == 0)
		ri->controlfd = fd;
	else if (strcmp(kind, PEER_QUEUE) == 0)
		ri->queuefd = fd;
	else if (strcmp(kind, PEER_VAULT) == 0)
		ri->vaultfd = fd;
	else if (strcmp(kind, PEER_SMTP) == 0 && ri->npeers < ROLE_FDS_MAX)
		ri->peers[ri->npeers++] = fd;
	else if (strcmp(kind, PEER_SMTP) == 0)
		close(fd);
	else
		fatalx("event=start result=error reason=\"unknown descriptor "
		    "%s\"", log_q(kind));
}

static void
role_receive(struct role_init *ri)
{
	static unsigned char b[IPC_MAX + 4];
	struct rec_reader rd;
	size_t len;
	int type, fd;

	for (;;) {
		if (ipc_recv_wait(PROC_PARENT_FD, &type, b, sizeof(b), &len,
		    &fd, ROLE_START_MS) == -1)
			fatalx("event=start result=error reason=\"no start-up "
			    "from the parent: %s\"", strerror(errno));
		rec_reader_init(&rd, b, len);
		if (type == IMSG_P_GO)
			break;
		if (type == IMSG_P_INIT)
			role_init_msg(ri, &rd);
		else if (type == IMSG_P_SECRETS)
			buf_append_wipe(&ri->secrets, b, len);
		else if (type == IMSG_P_ACCOUNTS &&
		    resolve_accounts_msg(b, len) == -1)
			fatalx("event=start result=error reason=\"malformed "
			    "accounts\"");
		else if (type == IMSG_P_TLS && ri->tls.data == NULL)
			buf_append(&ri->tls, b, len);	/* one allocation */
		else if ((type == IMSG_P_FD || type == IMSG_P_PEER) && fd >= 0)
			role_fd_msg(ri, type, &rd, fd);
		else if (fd >= 0)
			close(fd);
		explicit_bzero(b, len);
	}
}

/* Root only: become the configured user; its one group, no others. */
static void
role_drop(const struct role_init *ri, const char *role)
{
	gid_t gid = (gid_t)ri->gid;

	if (geteuid() != 0)
		return;
	if (ri->uid == 0)
		fatalx("event=start result=error reason=\"%s would run as "
		    "root\"", role);
	if (setgroups(1, &gid) == -1 || setgid(gid) == -1 ||
	    setuid((uid_t)ri->uid) == -1)
		fatalx("event=start result=error reason=\"%s cannot drop "
		    "privileges: %s\"", role, strerror(errno));
	if (setuid(0) != -1)
		panicx("event=start result=error reason=\"%s still root\"",
		    role);
}

static struct conf *
role_conf(struct role_init *ri)
{
	char err[1024];
	struct conf *c;

	proc_basedir = ri->basedir;
	c = conf_parse("(from parent)", ri->conf.data ? ri->conf.data : "",
	    ri->conf.len, proc_basedir, err, sizeof(err));
	if (c == NULL)
		fatalx("event=start result=error reason=\"%s\"", log_q(err));
	return c;
}

void
role_start(int argc, char *argv[], const char *arg)
{
	static struct role_init ri;
	static char role[16];
	struct conf *c;

	if (strcmp(arg, "smtp") != 0 && strcmp(arg, "queue") != 0 &&
	    strcmp(arg, "vault") != 0)
		fatalx("event=start result=error reason=\"unknown role %s\"",
		    log_q(arg));
	str_copy(role, arg, sizeof(role));	/* argv is the title now */
	proc_title(argc, argv, role);
	ri.submitfd = ri.controlfd = ri.queuefd = ri.smtpfd = ri.vaultfd = -1;
	buf_init(&ri.conf);
	buf_init(&ri.secrets);
	buf_init(&ri.tls);
	log_init(role, 1, 0);	/* stderr until the flags are known */
	role_receive(&ri);
	log_init(role, (ri.flags & ROLE_F_FOREGROUND) != 0,
	    (ri.flags & ROLE_F_VERBOSE) != 0);
	if (ri.self[0])
		resolve_self = ri.self;
	role_drop(&ri, role);
	if (strcmp(role, "smtp") != 0 && ri.tls.data != NULL) {
		explicit_bzero(ri.tls.data, ri.tls.cap);	/* not its key */
		buf_free(&ri.tls);
	}
	if (strcmp(role, "vault") == 0)
		vault_main(ri.secrets.data, ri.secrets.len, PROC_PARENT_FD,
		    ri.peers, ri.npeers, ri.queuefd);
	c = role_conf(&ri);
	if (strcmp(role, "smtp") == 0)
		smtp_main(c, ri.ls, ri.nls, ri.submitfd, PROC_PARENT_FD,
		    ri.queuefd, ri.vaultfd, &ri.tls);
	queue_main(c, ri.conf.data, ri.conf.len, PROC_PARENT_FD, ri.controlfd,
	    ri.npeers ? ri.peers[0] : -1, ri.vaultfd);
}
