/*-------------------------------------------------------------------------
 *
 * anonymize_throttle.c
 *	  The run's cost-based throttle: like autovacuum's cost-based delay,
 *	  with anonymize.cost_delay and anonymize.cost_limit, applied to the
 *	  scan (a delay point a row), the rewrite (one a batch) and the run's
 *	  VACUUM (PostgreSQL's own, with the same two settings); and the CPU
 *	  priority of the processes of the run (anonymize.run_nice), carried
 *	  to PostgreSQL's parallel workers they start by anonymize.process_nice.
 *
 * The accounting is the buffer manager's: while VacuumCostActive is set,
 * every page the run reads from shared buffers, from the kernel, or
 * dirties adds vacuum_cost_page_hit, _miss or _dirty to VacuumCostBalance.
 * A delay point sleeps cost_delay * balance / cost_limit once the balance
 * has reached cost_limit, and starts again from zero: over time the run
 * does cost_limit of work per cost_delay of sleep, whatever the size of
 * the step between two points.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

#include "anonymize_throttle.h"

/* processes sharing anonymize.cost_limit (a parallel scan), 1 otherwise */
int			anonymize_throttle_parts = 1;

/* Share anonymize.cost_limit among parts processes (1: all of it). */
void
anonymize_throttle_share(int parts)
{
	anonymize_throttle_parts = Max(parts, 1);
}

/*
 * anonymize.process_nice's assign hook: lower this process's CPU priority
 * to newval.  Never raises it: an unprivileged process cannot.  No error
 * (an assign hook must not fail): a process left as it was only competes
 * as the server's own processes do.
 */
void
anonymize_throttle_assign_nice(int newval, void *extra)
{
	int			current;

	errno = 0;
	current = getpriority(PRIO_PROCESS, 0);
	if (errno != 0 || newval <= current)
		return;
	(void) setpriority(PRIO_PROCESS, 0, newval);
}

/*
 * Lower this process's CPU priority to anonymize.run_nice, so that the
 * portal's backends get a core first, by setting anonymize.process_nice
 * for the session: PostgreSQL's parallel workers that the process starts
 * (those of its VACUUM's index pass) restore the setting from it, and its
 * assign hook lowers theirs too.  The run's processes (run()'s, its
 * workers, the scheduling worker) do nothing else that needs the
 * priority back.
 */
void
anonymize_throttle_nice(void)
{
	char		value[12];

	if (anonymize_run_nice <= 0)
		return;
	snprintf(value, sizeof(value), "%d", anonymize_run_nice);
	SetConfigOption("anonymize.process_nice", value, PGC_SUSET, PGC_S_SESSION);
	errno = 0;
	if (getpriority(PRIO_PROCESS, 0) < anonymize_run_nice && errno == 0)
		ereport(DEBUG1,
				(errmsg_internal("anonymize: could not set the run's nice value to %d",
								 anonymize_run_nice)));
}

/* Turn the throttle on, when anonymize.cost_delay is above 0; nice the process. */
void
anonymize_throttle_begin(void)
{
	VacuumCostBalance = 0;
	VacuumCostActive = (anonymize_cost_delay > 0);
	anonymize_throttle_nice();
}

/* Turn it off (also after an error): the process's other work is not charged. */
void
anonymize_throttle_end(void)
{
	VacuumCostActive = false;
	VacuumCostBalance = 0;
	anonymize_throttle_parts = 1;
}

/*
 * Sleep for the balance, interruptibly (a SIGTERM or a cancel cuts the
 * sleep short), and start again from zero.
 */
void
anonymize_throttle_sleep(void)
{
	double		msec;

	msec = anonymize_cost_delay * VacuumCostBalance * anonymize_throttle_parts /
		Max(anonymize_cost_limit, 1);
	VacuumCostBalance = 0;
	if (msec <= 0)
		return;
	/* no more than a second at once: a cancel is checked between sleeps */
	while (msec > 0)
	{
		long		step = (long) Min(msec, 1000.0);

		if (step < 1)
		{
			pg_usleep((long) (msec * 1000.0));
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 step, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		msec -= step;
	}
}
