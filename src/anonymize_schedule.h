/*-------------------------------------------------------------------------
 *
 * anonymize_schedule.h
 *	  When the daily run is due: instants of anonymize.run_at in
 *	  anonymize.timezone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_SCHEDULE_H
#define ANONYMIZE_SCHEDULE_H

#include "datatype/timestamp.h"
#include "pgtime.h"

/* the same for a daily time (minutes after midnight) in a time zone */
extern TimestampTz anonymize_schedule_latest_at(TimestampTz t, int minutes,
												pg_tz *tz);
extern TimestampTz anonymize_schedule_next_at(TimestampTz t, int minutes,
											  pg_tz *tz);

/* the latest scheduled instant at or before t */
extern TimestampTz anonymize_schedule_latest(TimestampTz t);

/* the first scheduled instant strictly after t */
extern TimestampTz anonymize_schedule_next(TimestampTz t);

#endif							/* ANONYMIZE_SCHEDULE_H */
