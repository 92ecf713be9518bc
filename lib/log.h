/*
 * log: one-line, grep-friendly records to syslog (facility mail) or, in
 * the foreground, to stderr.  Every process calls log_init once.
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

struct buf;

void	log_init(const char *role, int foreground, int verbose);
void	log_setrole(const char *role);
/* Let go of the syslog socket (before closing descriptors), or reopen it. */
void	log_close(void);
void	log_reopen(void);
/* Until set back to -1, fatal errors are also written to fd (start-up). */
void	log_startup(int fd);
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
/* Start-up and config errors only: log and exit(1). */
void	fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
/* A broken internal invariant: log and abort. */
void	panicx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Append s as a log value: bare if safe, else quoted with \xNN escapes. */
void	log_value(struct buf *, const char *);
/* A value escaped for inside "..." (log_q) or <...> (log_a) in a line. */
const char *log_q(const char *);
const char *log_a(const char *);
/* Copy untrusted text (a peer's reply) into dst, printable ASCII only. */
void	log_sanitize(char *dst, const char *src, unsigned long dstlen);

#endif
