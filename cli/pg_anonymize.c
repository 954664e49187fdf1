/*-------------------------------------------------------------------------
 *
 * pg_anonymize.c
 *	  The command-line client of the anonymize extension: files, lists,
 *	  shows, previews, cancels and confirms erasure requests, runs the
 *	  erasure with a progress display, reports the worker's status, and
 *	  exports and imports the ledger of Done requests.
 *
 * It follows PostgreSQL's client conventions: the connection options of
 * psql (-h -p -U -d, a conninfo string or URI as -d, the PG* environment),
 * --help and --version, messages as "pg_anonymize: error: ...", and exit
 * codes documented in --help (see pg_anonymize.h).
 *
 *-------------------------------------------------------------------------
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_anonymize.h"

const char *progname = "pg_anonymize";
PgaOptions	pga_opts;

/* which subcommand an option belongs to, to refuse it elsewhere */
enum
{
	OPT_PHONE = 1000,
	OPT_EMAIL,
	OPT_TO_DATE,
	OPT_COMMENT,
	OPT_ARCHIVE,
	OPT_SMS_SURVEY,
	OPT_RAW_DATA,
	OPT_USER,
	OPT_STATUS,
	OPT_NO_PROGRESS,
	OPT_INTERVAL,
	OPT_HELP
};

/* --help */
static void
pga_usage(void)
{
	printf("%s manages the erasure requests of the anonymize extension.\n\n", progname);
	printf("Usage:\n");
	printf("  %s [OPTION]... COMMAND [ID]\n", progname);
	printf("  %s [OPTION]... ledger {export|import} FILE\n\n", progname);
	printf("Commands:\n");
	printf("  add              file a request (Waiting) on the Anonymize page\n");
	printf("  list             the page as a table\n");
	printf("  show ID          a request and its receipts (anonymize.request_log)\n");
	printf("  preview ID       the rows a request would rewrite, changing nothing\n");
	printf("  cancel ID        cancel (delete) a Waiting request\n");
	printf("  confirm ID       release a Held request for the next run\n");
	printf("  run              run the erasure now and wait for it, showing progress\n");
	printf("  status           the worker: last run, next run, what it does now\n");
	printf("  ledger export FILE  the ledger of Done requests (digests, no identifier)\n");
	printf("                   to FILE (\"-\": standard output)\n");
	printf("  ledger import FILE  add a ledger's entries this database lacks (after a\n");
	printf("                   restore); the next run checks every row against it\n");
	printf("\nOptions of add:\n");
	printf("      --phone=NUMBER       phone number: national, or 00 and the country code\n");
	printf("      --email=ADDRESS      email address\n");
	printf("                           (\"-\" reads it from a line of standard input, phone\n");
	printf("                           first, so that it stays out of ps and shell history)\n");
	printf("      --to-date=DATE       contacts up to this date (inclusive; default today)\n");
	printf("      --comment=TEXT       comment shown on the page\n");
	printf("      --archive            scope: the archive\n");
	printf("      --sms-survey         scope: SMS survey answers\n");
	printf("      --raw-data           scope: raw statistics data\n");
	printf("                           (no scope given: the archive only)\n");
	printf("      --user=NAME          user name on the page (default: the session user)\n");
	printf("\nOptions of list:\n");
	printf("      --status=STATUS      only requests in this status (Waiting, Running,\n");
	printf("                           Held, Done, Failed)\n");
	printf("\nOptions of run:\n");
	printf("      --no-progress        print the summary only\n");
	printf("      --interval=SECONDS   time between progress updates (default 0.5)\n");
	printf("\nGeneral options:\n");
	printf("  -v, --verbose            show the SQLSTATE of errors\n");
	printf("  -V, --version            output version information, then exit\n");
	printf("  -?, --help               show this help, then exit\n");
	printf("\nConnection options:\n");
	printf("  -h, --host=HOSTNAME      database server host or socket directory\n");
	printf("  -p, --port=PORT          database server port\n");
	printf("  -U, --username=USERNAME  database user name\n");
	printf("  -d, --dbname=DBNAME      database name, or a connection string or URI\n");
	printf("  -w, --no-password        never prompt for password\n");
	printf("  -W, --password           force password prompt\n");
	printf("Unset options come from the environment (PGHOST, PGPORT, PGUSER,\n");
	printf("PGDATABASE, ...) and libpq's defaults, as for psql.\n");
	printf("\nExit status:\n");
	printf("  0  done\n");
	printf("  1  the server reported an error (its message, detail and hint are\n");
	printf("     printed), or the request does not exist\n");
	printf("  2  bad usage, or the connection failed\n");
	printf("  3  run: the run finished, but a request is Held (over\n");
	printf("     anonymize.max_rows_per_request) or Failed; see \"%s list\"\n", progname);
	printf("\nExamples:\n");
	printf("  %s -d archive add --phone=98765432 --to-date=2024-02-21 --comment='Ticket 4711'\n", progname);
	printf("  %s -d archive preview 12\n", progname);
	printf("  %s -d archive run\n", progname);
	printf("  %s -d archive ledger export /backup/anonymize-ledger.json\n", progname);
}

/* A usage error: the message, a hint to --help, exit status 2. */
static void
pga_usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: error: ", progname);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s: hint: Try \"%s --help\" for more information.\n",
			progname, progname);
	exit(PGA_EXIT_USAGE);
}

/* one line of standard input, without its newline */
static const char *
pga_read_stdin_line(const char *option)
{
	static char buf[2][1024];
	static int	n = 0;
	char	   *line = buf[n++ % 2];
	size_t		len;

	if (fgets(line, sizeof(buf[0]), stdin) == NULL)
		pga_usage_error("%s=- but nothing to read on standard input", option);
	len = strlen(line);
	if (len > 0 && line[len - 1] == '\n')
		line[--len] = '\0';
	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	return line;
}

/* the command an option belongs to, or NULL for general options */
static const char *
pga_option_command(int c)
{
	switch (c)
	{
		case OPT_PHONE:
		case OPT_EMAIL:
		case OPT_TO_DATE:
		case OPT_COMMENT:
		case OPT_ARCHIVE:
		case OPT_SMS_SURVEY:
		case OPT_RAW_DATA:
		case OPT_USER:
			return "add";
		case OPT_STATUS:
			return "list";
		case OPT_NO_PROGRESS:
		case OPT_INTERVAL:
			return "run";
		default:
			return NULL;
	}
}

/* one subcommand: its name and its handler */
typedef struct PgaCommand
{
	const char *name;
	int			(*handler) (PGconn *conn);	/* a command without an id */
	int			(*id_handler) (PGconn *conn, const char *id);	/* on one request */
	int			(*file_handler) (PGconn *conn, const char *action, const char *path);
} PgaCommand;

/* the subcommands, as --help lists them */
static const PgaCommand pga_commands[] = {
	{"add", pga_cmd_add, NULL, NULL},
	{"list", pga_cmd_list, NULL, NULL},
	{"show", NULL, pga_cmd_show, NULL},
	{"preview", NULL, pga_cmd_preview, NULL},
	{"cancel", NULL, pga_cmd_cancel, NULL},
	{"confirm", NULL, pga_cmd_confirm, NULL},
	{"run", pga_cmd_run, NULL, NULL},
	{"status", pga_cmd_status, NULL, NULL},
	{"ledger", NULL, NULL, pga_cmd_ledger},
};

/* The command of that name, or NULL. */
static const PgaCommand *
pga_find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(pga_commands) / sizeof(pga_commands[0]); i++)
		if (strcmp(pga_commands[i].name, name) == 0)
			return &pga_commands[i];
	return NULL;
}

/* --version */
static void
pga_version(void)
{
	printf("%s (anonymize) %s\n", progname, PGA_VERSION);
}

/* --help or --version as the first argument: answer and exit. */
static void
pga_early_options(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-?") == 0))
	{
		pga_usage();
		exit(PGA_EXIT_OK);
	}
	if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0))
	{
		pga_version();
		exit(PGA_EXIT_OK);
	}
}

/* Set an option of a subcommand (add, list, run) from optarg. */
static void
pga_set_command_option(int c)
{
	switch (c)
	{
		case OPT_PHONE:
			pga_opts.phone = optarg;
			break;
		case OPT_EMAIL:
			pga_opts.email = optarg;
			break;
		case OPT_TO_DATE:
			pga_opts.to_date = optarg;
			break;
		case OPT_COMMENT:
			pga_opts.comment = optarg;
			break;
		case OPT_ARCHIVE:
			pga_opts.archive = true;
			break;
		case OPT_SMS_SURVEY:
			pga_opts.sms_survey = true;
			break;
		case OPT_RAW_DATA:
			pga_opts.raw_data = true;
			break;
		case OPT_USER:
			pga_opts.user_name = optarg;
			break;
		case OPT_STATUS:
			pga_opts.status = optarg;
			break;
		case OPT_NO_PROGRESS:
			pga_opts.no_progress = true;
			break;
		case OPT_INTERVAL:
			{
				char	   *end;

				pga_opts.interval = strtod(optarg, &end);
				if (*end != '\0' || end == optarg ||
					!(pga_opts.interval >= 0.05 && pga_opts.interval <= 3600))
					pga_usage_error("invalid interval \"%s\": give seconds between 0.05 and 3600", optarg);
			}
			break;
	}
}

/* Set a general or connection option, or answer --help and --version. */
static void
pga_set_general_option(int c, char **argv)
{
	switch (c)
	{
		case 'h':
			pga_opts.host = optarg;
			break;
		case 'p':
			pga_opts.port = optarg;
			break;
		case 'U':
			pga_opts.user = optarg;
			break;
		case 'd':
			pga_opts.dbname = optarg;
			break;
		case 'w':
			pga_opts.prompt_password = -1;
			break;
		case 'W':
			pga_opts.prompt_password = 1;
			break;
		case 'v':
			pga_opts.verbose = true;
			break;
		case 'V':
			pga_version();
			exit(PGA_EXIT_OK);
		case OPT_HELP:
			pga_usage();
			exit(PGA_EXIT_OK);
		case '?':
			if (optopt == '?')
			{
				pga_usage();
				exit(PGA_EXIT_OK);
			}
			pga_usage_error("invalid option \"%s\"", argv[optind - 1]);
			break;
		case ':':
			pga_usage_error("option \"%s\" requires an argument", argv[optind - 1]);
			break;
		default:
			pga_usage_error("invalid option \"%s\"", argv[optind - 1]);
	}
}

/*
 * Read the options; used[] gets the argument that gave each subcommand
 * option, to refuse it with another command.
 */
static void
pga_parse_options(int argc, char **argv, const char **used)
{
	static const struct option long_options[] = {
		{"host", required_argument, NULL, 'h'},
		{"port", required_argument, NULL, 'p'},
		{"username", required_argument, NULL, 'U'},
		{"dbname", required_argument, NULL, 'd'},
		{"no-password", no_argument, NULL, 'w'},
		{"password", no_argument, NULL, 'W'},
		{"verbose", no_argument, NULL, 'v'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, OPT_HELP},
		{"phone", required_argument, NULL, OPT_PHONE},
		{"email", required_argument, NULL, OPT_EMAIL},
		{"to-date", required_argument, NULL, OPT_TO_DATE},
		{"comment", required_argument, NULL, OPT_COMMENT},
		{"archive", no_argument, NULL, OPT_ARCHIVE},
		{"sms-survey", no_argument, NULL, OPT_SMS_SURVEY},
		{"raw-data", no_argument, NULL, OPT_RAW_DATA},
		{"user", required_argument, NULL, OPT_USER},
		{"status", required_argument, NULL, OPT_STATUS},
		{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
		{"interval", required_argument, NULL, OPT_INTERVAL},
		{NULL, 0, NULL, 0}
	};
	int			c;

	pga_opts.interval = 0.5;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h:p:U:d:wWvV", long_options, NULL)) != -1)
	{
		if (c >= OPT_PHONE && c <= OPT_INTERVAL)
		{
			used[c - OPT_PHONE] = argv[optind - 1];
			pga_set_command_option(c);
		}
		else
			pga_set_general_option(c, argv);
	}
}

/* The command after the options, and its request id when it takes one. */
static const PgaCommand *
pga_parse_command(int argc, char **argv, const char **id, const char **path)
{
	const PgaCommand *cmd;

	if (optind >= argc)
		pga_usage_error("no command given%s", "");
	cmd = pga_find_command(argv[optind]);
	if (cmd == NULL)
		pga_usage_error("unknown command \"%s\"", argv[optind]);
	optind++;
	if (cmd->id_handler != NULL)
	{
		if (optind >= argc)
			pga_usage_error("command \"%s\" needs a request id", cmd->name);
		if (!pga_parse_id(argv[optind++], id))
			exit(PGA_EXIT_USAGE);
	}
	if (cmd->file_handler != NULL)
	{
		/* ledger export|import FILE: *id is the action */
		if (optind >= argc ||
			(strcmp(argv[optind], "export") != 0 && strcmp(argv[optind], "import") != 0))
			pga_usage_error("command \"%s\" needs export or import", cmd->name);
		*id = argv[optind++];
		if (optind >= argc)
			pga_usage_error("command \"ledger %s\" needs a file name (\"-\": standard input or output)", *id);
		*path = argv[optind++];
	}
	if (optind < argc)
		pga_usage_error("too many arguments, starting with \"%s\"", argv[optind]);
	return cmd;
}

/* Refuse an option of another command; add needs --phone or --email. */
static void
pga_check_options(const PgaCommand *cmd, const char **used)
{
	for (int c = OPT_PHONE; c <= OPT_INTERVAL; c++)
		if (used[c - OPT_PHONE] && strcmp(pga_option_command(c), cmd->name) != 0)
		{
			fprintf(stderr, "%s: error: option \"%s\" is for command \"%s\", not \"%s\"\n",
					progname, used[c - OPT_PHONE], pga_option_command(c), cmd->name);
			fprintf(stderr, "%s: hint: Try \"%s --help\" for more information.\n",
					progname, progname);
			exit(PGA_EXIT_USAGE);
		}
	if (strcmp(cmd->name, "add") == 0 && pga_opts.phone == NULL && pga_opts.email == NULL)
		pga_usage_error("command \"add\" needs --phone or --email, or both%s", "");
	/* "-": read it from standard input, out of ps and the shell's history */
	if (pga_opts.phone && strcmp(pga_opts.phone, "-") == 0)
		pga_opts.phone = pga_read_stdin_line("--phone");
	if (pga_opts.email && strcmp(pga_opts.email, "-") == 0)
		pga_opts.email = pga_read_stdin_line("--email");
}

/* pg_anonymize [OPTION]... COMMAND [ID] */
int
main(int argc, char **argv)
{
	const char *used[OPT_INTERVAL - OPT_PHONE + 1] = {0};
	const PgaCommand *cmd;
	const char *id = NULL;
	const char *path = NULL;
	PGconn	   *conn;
	int			rc;

	pga_early_options(argc, argv);
	pga_parse_options(argc, argv, used);
	cmd = pga_parse_command(argc, argv, &id, &path);
	pga_check_options(cmd, used);

	conn = pga_connect();
	if (cmd->file_handler)
		rc = cmd->file_handler(conn, id, path);
	else
		rc = cmd->id_handler ? cmd->id_handler(conn, id) : cmd->handler(conn);
	fflush(stdout);
	PQfinish(conn);
	return rc;
}
