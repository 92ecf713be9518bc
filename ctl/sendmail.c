/*
 * sendmail: the sendmail(1) personality of ternctl.  Placeholder entry
 * point until local submission lands; see docs/ARCHITECTURE.md.
 */
#include <stdio.h>

#include "ctl.h"

int
sendmail_main(int argc, char *argv[], const char *confpath)
{
	(void)argc;
	(void)argv;
	(void)confpath;
	fprintf(stderr, "sendmail: local submission is not available in this "
	    "version of Tern; submit over SMTP instead\n");
	return 75;
}
