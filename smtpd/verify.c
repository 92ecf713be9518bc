/*
 * verify: is an LMTP-delivered recipient known to its LMTP server?  Runs
 * in the smtp process (see verify.h).  The smtp process already speaks to
 * every outside server (the SMTP and LMTP client) and its filter allows
 * socket and connect, so the probe needs no other role and no round trip
 * through one; it is a small state machine on the process's event loop,
 * so a slow or dead LMTP server stalls only the sessions that wait for it.
 * The server's replies are untrusted input: lines are bounded, codes
 * checked, text sanitised.  Probes of one address share one dialogue;
 * answers are cached (yes and no apart), temporary failures never.
 *
 * A system account's mailbox under local-delivery lmtp has its ~/.forward
 * read first at delivery, as before a Maildir; so here, before the
 * server or the map is asked, the parent (root: homes are often closed
 * to this process) says whether the account has a ~/.forward that will
 * be read.  If so the forward takes the mail and the recipient is taken,
 * as Postfix's local(8) expands .forward before its mailbox_transport.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "lib/addr.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/resolve.h"
#include "queue/mta.h"
#include "smtpd/verify.h"

#define VERIFY_CACHE_MAX	4096	/* addresses remembered */
#define VERIFY_PROBES_MAX	32	/* dialogues at once, per server */
#define VERIFY_WAITERS_MAX	256	/* sessions waiting on one probe */
#define VERIFY_SECS		30	/* a whole probe */
#define VERIFY_LINE_MAX		1024
#define VERIFY_LINES_MAX	100	/* lines of one reply */
#define VERIFY_MAP_MAX		(8 * 1024 * 1024)
#define VERIFY_TEXT		300
#define VERIFY_ASKS_MAX		1024	/* ~/.forward questions in flight */

struct vcache {
	char	*key;		/* server "|" address */
	int	 result;	/* VERIFY_OK or VERIFY_NO */
	time_t	 expires;
	char	 text[VERIFY_TEXT];
};

struct vwaiter {
	uint64_t	 sid;
	verify_cb	 cb;
};

/* A question to the parent: has the account a ~/.forward to read? */
struct vask {
	struct vask	*next;
	uint64_t	 id;
	char		*addr;
	uint64_t	 sid;
	verify_cb	 cb;
};

struct vprobe {
	struct vprobe		*next;
	char			*key;
	char			*addr;
	char			 server[160];	/* for messages */
	struct bufferevent	*bev;
	int			 step;		/* replies read so far */
	int			 code, lines;
	int			 smtputf8;	/* offered in the LHLO reply */
	char			 text[VERIFY_TEXT];
	struct vwaiter		*w;
	size_t			 nw;
	struct event		*done;		/* deferred finish */
	int			 result;
};

static struct {
	struct event_base	*base;
	const struct conf	*conf;
	struct aliases		*aliases;
	struct vcache		 cache[VERIFY_CACHE_MAX];
	size_t			 ncache;
	struct vprobe		*probes;
	size_t			 nprobes;
	char			*map;		/* lmtp-recipients, whole */
	size_t			 maplen;
	struct timespec		 mapmtime;
	ino_t			 mapino;
	int			 maploaded;
	struct ipc		*parent;
	struct vask		*asks;
	size_t			 nasks;
	uint64_t		 nextask;
} vf;

void
verify_init(struct event_base *base, const struct conf *conf,
    struct aliases *aliases)
{
	vf.base = base;
	vf.conf = conf;
	vf.aliases = aliases;
}

/* ---- which server, which address ------------------------------------------- */

void
verify_parent(struct ipc *parent)
{
	vf.parent = parent;
}

/*
 * Whether addr is delivered over LMTP, to which server (*route) and as
 * which address (out), and the system account whose mailbox it is, if
 * any (acct; root's .forward is never read).  1 yes, 0 no, -1 temporary
 * (aliases unreadable).
 */
static int
verify_target(const char *addr, const struct route **route,
    struct route *local, char *out, size_t outlen, char *acct,
    size_t acctlen)
{
	char lp[256], dom[256];
	struct target *t;
	size_t n;
	int r = 0;

	acct[0] = '\0';
	if (resolve_split(addr, lp, sizeof(lp), dom, sizeof(dom)) == -1)
		return 0;
	if ((*route = conf_lmtp_route(vf.conf, dom)) != NULL) {
		str_copy(out, addr, outlen);
		return 1;
	}
	if (!conf_is_local_domain(vf.conf, dom) || strcmp(conf_str(vf.conf,
	    K_LOCAL_DELIVERY), "lmtp") != 0 || strcmp(lp, "postmaster") == 0)
		return 0;
	/* An address that ends at one mailbox of the LMTP server is asked
	   about; aliases to several targets, virtual users are not. */
	if (resolve_expand(vf.conf, vf.aliases, addr, &t, &n, out,
	    outlen) == -1)
		return -1;
	if (n == 1 && t[0].kind == TG_LMTP) {
		resolve_lmtp_addr(&t[0], out, outlen);
		if (t[0].account && t[0].uid != 0)
			str_copy(acct, t[0].user, acctlen);
		memset(local, 0, sizeof(*local));
		local->lmtp = 1;
		if (conf_lmtp_spec(conf_str(vf.conf, K_LMTP), local) == 0)
			*route = local;
		r = *route ? 1 : -1;
	}
	resolve_free(t, n);
	return r;
}

static void
verify_route_free(struct route *r)
{
	free(r->host);
	free(r->path);
	r->host = r->path = NULL;
}

static void
verify_server_name(const struct route *r, char *out, size_t len)
{
	if (r->path)
		snprintf(out, len, "unix:%s", r->path);
	else
		snprintf(out, len, "%s:%d", r->host, r->port);
}

/* ---- the map ------------------------------------------------------------------- */

int
verify_map_has(const char *text, size_t len, const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t i = 0, alen = strlen(addr), dlen = at ? strlen(at) : 0;

	while (i < len) {
		const char *l = text + i, *e = memchr(l, '\n', len - i);
		size_t n = e ? (size_t)(e - l) : len - i;

		i += n + 1;
		while (n > 0 && (l[0] == ' ' || l[0] == '\t')) {
			l++;
			n--;
		}
		while (n > 0 && (l[n - 1] == ' ' || l[n - 1] == '\t' ||
		    l[n - 1] == '\r'))
			n--;
		if (n == 0 || l[0] == '#')
			continue;
		if (n == alen && strncasecmp(l, addr, n) == 0)
			return 1;
		if (l[0] == '@' && at && n == dlen && strncasecmp(l, at, n) == 0)
			return 1;
	}
	return 0;
}

/* The map as it is now on disk (read again when it changed). */
static int
verify_map_load(void)
{
	const char *path = conf_str(vf.conf, K_LMTP_RECIPIENTS);
	struct stat st;
	struct buf b;
	char chunk[8192];
	ssize_t n;
	int fd;

	if (path == NULL || stat(path, &st) == -1)
		return -1;
	if (vf.maploaded && st.st_ino == vf.mapino &&
	    st.st_mtim.tv_sec == vf.mapmtime.tv_sec &&
	    st.st_mtim.tv_nsec == vf.mapmtime.tv_nsec)
		return 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1)
		return -1;
	buf_init(&b);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0 &&
	    b.len + (size_t)n <= VERIFY_MAP_MAX)
		buf_append(&b, chunk, (size_t)n);
	close(fd);
	if (n != 0) {
		buf_free(&b);
		return -1;
	}
	free(vf.map);
	vf.maplen = b.len;
	vf.map = buf_steal(&b);
	vf.mapino = st.st_ino;
	vf.mapmtime = st.st_mtim;
	vf.maploaded = 1;
	return 0;
}

/* ---- the cache ----------------------------------------------------------------- */

static struct vcache *
verify_cache_find(const char *key)
{
	time_t now = time(NULL);

	for (size_t i = 0; i < vf.ncache; i++)
		if (strcmp(vf.cache[i].key, key) == 0) {
			if (vf.cache[i].expires > now)
				return &vf.cache[i];
			return NULL;
		}
	return NULL;
}

static void
verify_cache_put(const char *key, int result, const char *text)
{
	long long ms = conf_num(vf.conf, NULL, result == VERIFY_OK ?
	    K_LMTP_VERIFY_CACHE : K_LMTP_VERIFY_NEGATIVE);
	time_t now = time(NULL);
	struct vcache *c = NULL;
	size_t i, old = 0;

	if (ms <= 0)
		return;
	for (i = 0; i < vf.ncache && c == NULL; i++)
		if (strcmp(vf.cache[i].key, key) == 0 ||
		    vf.cache[i].expires <= now)
			c = &vf.cache[i];
	if (c == NULL && vf.ncache < VERIFY_CACHE_MAX)
		c = &vf.cache[vf.ncache++];
	if (c == NULL) {
		/* Full of live entries: the one expiring first goes. */
		for (i = 1; i < vf.ncache; i++)
			if (vf.cache[i].expires < vf.cache[old].expires)
				old = i;
		c = &vf.cache[old];
	}
	free(c->key);
	c->key = xstrdup(key);
	c->result = result;
	c->expires = now + (time_t)(ms / 1000) + (ms % 1000 ? 1 : 0);
	str_copy(c->text, text, sizeof(c->text));
}

/* ---- the probe ------------------------------------------------------------------ */

static void
verify_probe_free(struct vprobe *p)
{
	struct vprobe **pp;

	for (pp = &vf.probes; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	vf.nprobes--;
	if (p->bev)
		bufferevent_free(p->bev);
	if (p->done)
		event_free(p->done);
	free(p->key);
	free(p->addr);
	free(p->w);
	free(p);
}

/* Tell every waiting session, from the loop (the probe is gone by then). */
static void
verify_probe_report(evutil_socket_t fd, short ev, void *arg)
{
	struct vprobe *p = arg;

	log_info("event=verify result=%s to=<%s> server=%s reason=\"%s\"",
	    p->result == VERIFY_OK ? "ok" : p->result == VERIFY_NO ?
	    "reject" : "tempfail", log_a(p->addr), log_q(p->server),
	    log_q(p->text));
	if (p->result != VERIFY_TEMP)
		verify_cache_put(p->key, p->result, p->text);
	for (size_t i = 0; i < p->nw; i++)
		p->w[i].cb(p->w[i].sid, p->result, p->text);
	verify_probe_free(p);
}

/* A finished probe's connection: QUIT written, then closed. */
static void
verify_closer_event(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
}

static void
verify_closer_write(struct bufferevent *bev, void *arg)
{
	bufferevent_free(bev);
}

static void
verify_probe_end(struct vprobe *p, int result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
verify_probe_end(struct vprobe *p, int result, const char *fmt, ...)
{
	char raw[VERIFY_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	log_sanitize(p->text, raw, sizeof(p->text));
	p->result = result;
	if (p->bev && p->step > 0 && result != VERIFY_TEMP) {
		/* QUIT, then close once it is written (5 s at most); no
		   reply matters now. */
		struct timeval tv = { 5, 0 };

		bufferevent_setcb(p->bev, NULL, verify_closer_write,
		    verify_closer_event, NULL);
		bufferevent_disable(p->bev, EV_READ);
		bufferevent_set_timeouts(p->bev, &tv, &tv);
		bufferevent_write(p->bev, "QUIT\r\n", 6);
		p->bev = NULL;
	} else if (p->bev) {
		bufferevent_free(p->bev);
		p->bev = NULL;
	}
	if (p->done == NULL)
		p->done = evtimer_new(vf.base, verify_probe_report, p);
	event_active(p->done, EV_TIMEOUT, 0);
}

static void
verify_send(struct vprobe *p, const char *fmt, const char *arg)
{
	struct buf b;

	buf_init(&b);
	buf_printf(&b, fmt, arg);
	buf_append(&b, "\r\n", 2);
	bufferevent_write(p->bev, b.data, b.len);
	buf_free(&b);
}

/* A whole reply: greeting, LHLO, MAIL, then the RCPT that decides. */
static void
verify_reply(struct vprobe *p, const char *text)
{
	static const char *const what[] = { "greeting", "LHLO", "MAIL FROM" };
	int step = p->step++;

	if (step < 3 && p->code / 100 != 2) {
		verify_probe_end(p, VERIFY_TEMP, "lmtp %s refused %s: %s",
		    p->server, what[step], text);
		return;
	}
	switch (step) {
	case 0:
		verify_send(p, "LHLO %s", conf_str(vf.conf, K_HOSTNAME));
		return;
	case 1:
		/* The address as the delivery will name it: as it is with
		   SMTPUTF8, else its domain's A-labels. */
		verify_send(p, "MAIL FROM:<>%s", p->smtputf8 &&
		    addr_has8bit(p->addr) ? " SMTPUTF8" : "");
		return;
	case 2: {
		char ascii[1024];

		verify_send(p, "RCPT TO:<%s>", !p->smtputf8 &&
		    addr_has8bit(p->addr) && addr_ascii(p->addr, ascii,
		    sizeof(ascii)) == 0 ? ascii : p->addr);
		return;
	}
	}
	verify_probe_end(p, p->code / 100 == 2 ? VERIFY_OK : p->code / 100 ==
	    5 ? VERIFY_NO : VERIFY_TEMP, "%s", text);
}

static void
verify_readcb(struct bufferevent *bev, void *arg)
{
	struct vprobe *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;
	int code, more;

	while (p->bev && (line = evbuffer_readln(in, &len,
	    EVBUFFER_EOL_CRLF)) != NULL) {
		if (len > VERIFY_LINE_MAX || mta_reply_line(line, len, &code,
		    &more) == -1 || (p->lines > 0 && code != p->code) ||
		    ++p->lines > VERIFY_LINES_MAX) {
			free(line);
			verify_probe_end(p, VERIFY_TEMP, "malformed reply from "
			    "lmtp %s", p->server);
			return;
		}
		if (p->lines == 1) {
			p->code = code;
			str_copy(p->text, line, sizeof(p->text));
		}
		if (p->step == 1 && len >= 12 &&
		    strcasecmp(line + 4, "SMTPUTF8") == 0)
			p->smtputf8 = 1;
		free(line);
		if (more)
			continue;
		p->lines = 0;
		{
			char text[VERIFY_TEXT];

			log_sanitize(text, p->text, sizeof(text));
			verify_reply(p, text);
		}
	}
	if (p->bev && evbuffer_get_length(in) > VERIFY_LINE_MAX)
		verify_probe_end(p, VERIFY_TEMP, "reply line from lmtp %s too "
		    "long", p->server);
}

static void
verify_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct vprobe *p = arg;
	int err = EVUTIL_SOCKET_ERROR();

	if (what & BEV_EVENT_CONNECTED)
		return;
	verify_probe_end(p, VERIFY_TEMP, "lmtp %s: %s%s%s", p->server,
	    (what & BEV_EVENT_TIMEOUT) ? "timeout" : (what & BEV_EVENT_EOF) ?
	    "lost connection" : p->step == 0 ? "cannot connect" :
	    "connection error", (what & BEV_EVENT_ERROR) && err ? ": " : "",
	    (what & BEV_EVENT_ERROR) && err ?
	    evutil_socket_error_to_string(err) : "");
}

/* The server's address: a unix socket or an address literal. */
static int
verify_sockaddr(const struct route *r, struct sockaddr_storage *ss,
    int *len)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)ss;
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	const char *h = r->host;

	memset(ss, 0, sizeof(*ss));
	if (r->path) {
		sun->sun_family = AF_UNIX;
		if (str_copy(sun->sun_path, r->path, sizeof(sun->sun_path)) >=
		    sizeof(sun->sun_path))
			return -1;
		*len = (int)sizeof(*sun);
		return 0;
	}
	if (h && inet_pton(AF_INET, h, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)r->port);
		*len = (int)sizeof(*in);
		return 0;
	}
	if (h && inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)r->port);
		*len = (int)sizeof(*in6);
		return 0;
	}
	return -1;
}

static struct vprobe *
verify_probe_start(const struct route *r, const char *key, const char *addr,
    char *text, size_t textlen)
{
	struct timeval tv = { VERIFY_SECS, 0 };
	struct sockaddr_storage ss;
	struct vprobe *p;
	char server[160];
	size_t n = 0;
	int len;

	verify_server_name(r, server, sizeof(server));
	if (verify_sockaddr(r, &ss, &len) == -1) {
		snprintf(text, textlen, "lmtp %s: not an address", server);
		return NULL;
	}
	/* Per server: a hung one does not stop checks for the others. */
	for (p = vf.probes; p; p = p->next)
		n += strcmp(p->server, server) == 0;
	if (n >= VERIFY_PROBES_MAX) {
		snprintf(text, textlen, "too many recipient checks at once");
		return NULL;
	}
	p = xcalloc(1, sizeof(*p));
	p->key = xstrdup(key);
	p->addr = xstrdup(addr);
	str_copy(p->server, server, sizeof(p->server));
	p->bev = bufferevent_socket_new(vf.base, -1, BEV_OPT_CLOSE_ON_FREE);
	p->next = vf.probes;
	vf.probes = p;
	vf.nprobes++;
	bufferevent_setcb(p->bev, verify_readcb, NULL, verify_eventcb, p);
	bufferevent_set_timeouts(p->bev, &tv, &tv);
	bufferevent_enable(p->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&ss,
	    len) == -1)
		verify_probe_end(p, VERIFY_TEMP, "lmtp %s: cannot connect",
		    server);
	return p;
}

/* ---- the account's ~/.forward ------------------------------------------------------ */

static int
verify_ask(const char *addr, const char *acct, uint64_t sid, verify_cb cb,
    char *text, size_t textlen)
{
	struct vask *a;
	struct buf b;

	if (vf.nasks >= VERIFY_ASKS_MAX) {
		snprintf(text, textlen, "too many recipient checks at once");
		return VERIFY_TEMP;
	}
	a = xcalloc(1, sizeof(*a));
	a->id = ++vf.nextask;
	a->addr = xstrdup(addr);
	a->sid = sid;
	a->cb = cb;
	a->next = vf.asks;
	vf.asks = a;
	vf.nasks++;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, a->id);
	rec_put_str(&b, T_USER, acct);
	ipc_send(vf.parent, IMSG_P_FORWARD, b.data, b.len, -1);
	buf_free(&b);
	return VERIFY_WAIT;
}

static int	verify_check(const char *, uint64_t, verify_cb, char *, size_t,
		    int);

void
verify_forward_answer(struct rec_reader *rd)
{
	struct vask **pp, *a;
	char text[VERIFY_TEXT];
	uint64_t id = 0, yes = 0;
	struct rec r;
	int v;

	while (rec_next(rd, &r) == 1)
		if (r.tag == T_JOB)
			rec_u64(&r, &id);
		else if (r.tag == T_STATUS)
			rec_u64(&r, &yes);
	for (pp = &vf.asks; (a = *pp) != NULL; pp = &a->next)
		if (a->id == id)
			break;
	if (a == NULL)
		return;
	*pp = a->next;
	vf.nasks--;
	if (yes) {
		str_copy(text, "~/.forward takes the mail", sizeof(text));
		log_info("event=verify result=ok to=<%s> reason=\"%s\"",
		    log_a(a->addr), text);
		v = VERIFY_OK;
	} else
		v = verify_check(a->addr, a->sid, a->cb, text, sizeof(text), 1);
	if (v != VERIFY_WAIT)
		a->cb(a->sid, v, text);
	free(a->addr);
	free(a);
}

/* ---- the check ------------------------------------------------------------------ */

int
verify_rcpt(const char *addr, uint64_t sid, verify_cb cb, char *text,
    size_t textlen)
{
	return verify_check(addr, sid, cb, text, textlen, 0);
}

/* asked: the parent said already that no ~/.forward takes the mail. */
static int
verify_check(const char *addr, uint64_t sid, verify_cb cb, char *text,
    size_t textlen, int asked)
{
	const struct route *r = NULL;
	struct route local;
	char laddr[600], server[160], acct[64];
	struct vcache *c;
	struct vprobe *p;
	struct buf key;
	int t;

	text[0] = '\0';
	memset(&local, 0, sizeof(local));
	if ((t = verify_target(addr, &r, &local, laddr, sizeof(laddr), acct,
	    sizeof(acct))) != 1) {
		verify_route_free(&local);
		if (t == -1)
			snprintf(text, textlen, "temporary lookup failure");
		return t == -1 ? VERIFY_TEMP : VERIFY_SKIP;
	}
	if (asked || vf.parent == NULL)
		acct[0] = '\0';
	if (strcmp(conf_str(vf.conf, K_LMTP_VERIFY), "map") == 0) {
		verify_route_free(&local);
		if (acct[0])
			return verify_ask(addr, acct, sid, cb, text, textlen);
		if (verify_map_load() == -1) {
			snprintf(text, textlen, "lmtp-recipients map unreadable");
			return VERIFY_TEMP;
		}
		if (verify_map_has(vf.map, vf.maplen, laddr) ||
		    verify_map_has(vf.map, vf.maplen, addr))
			return VERIFY_OK;
		snprintf(text, textlen, "not in the lmtp-recipients map");
		return VERIFY_NO;
	}
	verify_server_name(r, server, sizeof(server));
	buf_init(&key);
	buf_printf(&key, "%s|%s", server, laddr);
	if ((c = verify_cache_find(key.data)) != NULL) {
		str_copy(text, c->text, textlen);
		buf_free(&key);
		verify_route_free(&local);
		return c->result;
	}
	if (acct[0]) {
		buf_free(&key);
		verify_route_free(&local);
		return verify_ask(addr, acct, sid, cb, text, textlen);
	}
	for (p = vf.probes; p; p = p->next)
		if (strcmp(p->key, key.data) == 0 && p->done == NULL)
			break;
	if (p == NULL)
		p = verify_probe_start(r, key.data, laddr, text, textlen);
	buf_free(&key);
	verify_route_free(&local);
	if (p == NULL)
		return VERIFY_TEMP;
	if (p->nw >= VERIFY_WAITERS_MAX) {
		snprintf(text, textlen, "too many sessions wait for this check");
		return VERIFY_TEMP;
	}
	p->w = xreallocarray(p->w, p->nw + 1, sizeof(*p->w));
	p->w[p->nw].sid = sid;
	p->w[p->nw++].cb = cb;
	return VERIFY_WAIT;
}
