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

/* the latest scheduled instant at or before t */
extern TimestampTz anonymize_schedule_latest(TimestampTz t);

/* the first scheduled instant strictly after t */
extern TimestampTz anonymize_schedule_next(TimestampTz t);

#endif							/* ANONYMIZE_SCHEDULE_H */
