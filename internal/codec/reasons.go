package codec

// The reasons recorded as the error of a task that ended cancelled without a
// reason of its own: written by the client (a cancel request) and the worker
// (a cancel request seen while running, or the task's deadline), and read
// back by the client, which maps them to context.Canceled and
// context.DeadlineExceeded (client.TaskError.Is). Stored in task records:
// changing one breaks the records already written.
const (
	ReasonCancelled = "cancelled"
	ReasonDeadline  = "deadline exceeded"
)
