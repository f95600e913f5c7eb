package main

import (
	"runtime"
	"syscall"
	"time"
)

// preciseSleeper returns a sleep for the open-loop generator and a func to
// call when done. time.Sleep wakes up to a millisecond late on an idle
// process (the runtime's poller waits in whole milliseconds), as late as
// the gaps of a 1,000/s schedule are long; nanosleep(2) on the caller's own
// thread wakes within about a tenth of that.
func preciseSleeper() (sleep func(time.Duration), done func()) {
	runtime.LockOSThread()
	return func(d time.Duration) {
		ts := syscall.NsecToTimespec(int64(d))
		for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
		}
	}, runtime.UnlockOSThread
}
