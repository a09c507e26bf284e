-- One task per pilot's order id (SQLite's migration 15, relay/db.py): a submit sent again
-- after its answer was lost (a replica killed after the commit) is answered with the task
-- its order made (relay/tasks.py, made_by), and two replicas handed the same order at
-- once cannot both queue it.
CREATE UNIQUE INDEX tasks_pilot_order ON tasks (pilot, order_id) WHERE order_id IS NOT NULL;
