/*
 * anonymize_throttle.h: the run's cost-based throttle, like autovacuum's
 * (anonymize.cost_delay, anonymize.cost_limit).
 *
 * While the throttle is on, the buffer manager charges each page the run
 * reads or dirties to VacuumCostBalance (vacuum_cost_page_hit, _miss,
 * _dirty), as it does for VACUUM; anonymize_throttle_point() sleeps
 * cost_delay for every cost_limit of it.  The run's own VACUUM uses the
 * same two settings.
 */
#ifndef ANONYMIZE_THROTTLE_H
#define ANONYMIZE_THROTTLE_H

#include "miscadmin.h"

#include "anonymize_settings.h"

extern void anonymize_throttle_begin(void);
extern void anonymize_throttle_end(void);
extern void anonymize_throttle_sleep(void);
extern void anonymize_throttle_nice(void);
extern void anonymize_throttle_assign_nice(int newval, void *extra);

/*
 * The processes of a parallel scan share anonymize.cost_limit: each one
 * sleeps once it has done its part (the limit divided by parts).
 */
extern int	anonymize_throttle_parts;
extern void anonymize_throttle_share(int parts);

/* A delay point: sleeps when the balance has reached the limit. */
static inline void
anonymize_throttle_point(void)
{
	if (VacuumCostActive && VacuumCostBalance * anonymize_throttle_parts >= anonymize_cost_limit)
		anonymize_throttle_sleep();
}

#endif							/* ANONYMIZE_THROTTLE_H */
