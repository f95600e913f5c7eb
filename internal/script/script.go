// Package script holds the project's Lua scripts. Each .lua file opens with its
// KEYS/ARGV/return contract. Every state change of a task is one script, and
// every script that writes is safe to run twice (go-redis resends a command
// after a timeout or a broken connection).
package script

import (
	"context"
	_ "embed"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed lib.lua
	libSrc string
	//go:embed enqueue.lua
	enqueueSrc string
	//go:embed complete.lua
	completeSrc string
	//go:embed heartbeat.lua
	heartbeatSrc string
	//go:embed reclaim.lua
	reclaimSrc string
	//go:embed adopt.lua
	adoptSrc string
	//go:embed forward.lua
	forwardSrc string
	//go:embed housekeep.lua
	housekeepSrc string
	//go:embed state.lua
	stateSrc string
	//go:embed retrydead.lua
	retryDeadSrc string
	//go:embed cancel.lua
	cancelSrc string
	//go:embed contadd.lua
	contAddSrc string
	//go:embed waiting.lua
	waitingSrc string
	//go:embed activate.lua
	activateSrc string
	//go:embed purgedead.lua
	purgeDeadSrc string
	//go:embed groupnew.lua
	groupNewSrc string
	//go:embed groupadd.lua
	groupAddSrc string
	//go:embed groupend.lua
	groupEndSrc string
	//go:embed groupcont.lua
	groupContSrc string
	//go:embed groupcancel.lua
	groupCancelSrc string
	//go:embed groupenq.lua
	groupEnqSrc string
	//go:embed jointtl.lua
	joinTTLSrc string
	//go:embed kidsadd.lua
	kidsAddSrc string
	//go:embed limacquire.lua
	limAcquireSrc string
	//go:embed limwait.lua
	limWaitSrc string
	//go:embed limrelease.lua
	limReleaseSrc string
	//go:embed wake.lua
	wakeSrc string
	//go:embed ratelimit.lua
	rateLimitSrc string
	//go:embed comparedel.lua
	compareDelSrc string
	//go:embed claim.lua
	claimSrc string
	//go:embed duemark.lua
	dueMarkSrc string
	//go:embed dueupdate.lua
	dueUpdateSrc string
	//go:embed repdeclare.lua
	repDeclareSrc string
	//go:embed repfire.lua
	repFireSrc string
	//go:embed repremove.lua
	repRemoveSrc string
	//go:embed repmove.lua
	repMoveSrc string
	//go:embed repindex.lua
	repIndexSrc string
	//go:embed partstep.lua
	partStepSrc string
	//go:embed parttake.lua
	partTakeSrc string
	//go:embed partappend.lua
	partAppendSrc string
	//go:embed partdone.lua
	partDoneSrc string
	//go:embed batchadd.lua
	batchAddSrc string
	//go:embed batchflush.lua
	batchFlushSrc string
	//go:embed batchend.lua
	batchEndSrc string
	//go:embed batchabort.lua
	batchAbortSrc string
	//go:embed workerreg.lua
	workerRegSrc string
	//go:embed groupprune.lua
	groupPruneSrc string
	//go:embed groupmk.lua
	groupMkSrc string
	//go:embed qstats.lua
	qStatsSrc string
)

// The scripts, one per file.
var (
	Enqueue   = newScript(enqueueSrc)
	Complete  = newScript(completeSrc)
	Heartbeat = newScript(heartbeatSrc)
	Reclaim   = newScript(reclaimSrc)
	Adopt     = newScript(adoptSrc)
	Forward   = newScript(forwardSrc)
	Housekeep = newScript(housekeepSrc)
	State     = newScript(stateSrc)
	RetryDead = newScript(retryDeadSrc)
	Cancel    = newScript(cancelSrc)
	ContAdd   = newScript(contAddSrc)
	Waiting   = newScript(waitingSrc)
	Activate  = newScript(activateSrc)
	PurgeDead = newScript(purgeDeadSrc)

	GroupNew    = newScript(groupNewSrc)
	GroupAdd    = newScript(groupAddSrc)
	GroupEnd    = newScript(groupEndSrc)
	GroupCont   = newScript(groupContSrc)
	GroupCancel = newScript(groupCancelSrc)
	GroupEnq    = newScript(groupEnqSrc)
	JoinTTL     = newScript(joinTTLSrc)
	KidsAdd     = newScript(kidsAddSrc)

	LimAcquire = newScript(limAcquireSrc)
	LimWait    = newScript(limWaitSrc)
	LimRelease = newScript(limReleaseSrc)
	Wake       = newScript(wakeSrc)

	// RateLimit does not need lib.lua; it stands alone so that package
	// ratelimit loads one small script.
	RateLimit = redis.NewScript(rateLimitSrc)

	CompareDel = newScript(compareDelSrc)
	Claim      = newScript(claimSrc)
	DueMark    = newScript(dueMarkSrc)
	DueUpdate  = newScript(dueUpdateSrc)

	RepDeclare = newScript(repDeclareSrc)
	RepFire    = newScript(repFireSrc)
	RepRemove  = newScript(repRemoveSrc)
	RepMove    = newScript(repMoveSrc)
	RepIndex   = newScript(repIndexSrc)

	PartStep   = newScript(partStepSrc)
	PartTake   = newScript(partTakeSrc)
	PartAppend = newScript(partAppendSrc)
	PartDone   = newScript(partDoneSrc)

	BatchAdd   = newScript(batchAddSrc)
	BatchFlush = newScript(batchFlushSrc)
	BatchEnd   = newScript(batchEndSrc)
	BatchAbort = newScript(batchAbortSrc)

	WorkerReg  = newScript(workerRegSrc)
	GroupPrune = newScript(groupPruneSrc)
	GroupMk    = newScript(groupMkSrc)
	QStats     = newScript(qStatsSrc)
)

// newScript puts the shared helpers of lib.lua that a script's body uses
// in front of it.
func newScript(body string) *redis.Script {
	src := libFor(body) + "\n" + body
	s := redis.NewScript(src)
	sources[s] = src
	return s
}

// sources holds every script's full source, for the package's tests.
var sources = map[*redis.Script]string{}

// libFunc is one helper of lib.lua: its name and its text (the comment
// above it included).
type libFunc struct {
	name string
	src  string
}

// libFuncs splits lib.lua into its helpers, in order: each is a top-level
// "local function NAME(" through the next line that is "end".
var libFuncs = func() []libFunc {
	var out []libFunc
	var cur strings.Builder
	name := ""
	for _, line := range strings.SplitAfter(libSrc, "\n") {
		cur.WriteString(line)
		if rest, ok := strings.CutPrefix(line, "local function "); ok {
			name, _, _ = strings.Cut(rest, "(")
		}
		if name != "" && strings.TrimRight(line, "\r\n") == "end" {
			out = append(out, libFunc{name: name, src: cur.String()})
			cur.Reset()
			name = ""
		}
	}
	if name != "" {
		panic("script: lib.lua: function " + name + " has no closing end at column 0")
	}
	return out
}()

// calls reports whether src calls the helper name.
func calls(src, name string) bool {
	for i := 0; ; {
		j := strings.Index(src[i:], name)
		if j < 0 {
			return false
		}
		at := i + j
		end := at + len(name)
		before := at == 0 || !isIdent(src[at-1])
		after := strings.TrimLeft(src[end:], " \t")
		if before && strings.HasPrefix(after, "(") {
			return true
		}
		i = end
	}
}

func isIdent(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// libFor returns the helpers of lib.lua that body calls, and those they
// call, in lib.lua's order: every script is compiled on its own (by Redis,
// and by miniredis in tests, for each server), so each carries only what
// it runs.
func libFor(body string) string {
	need := make([]bool, len(libFuncs))
	for i := len(libFuncs) - 1; i >= 0; i-- {
		if calls(body, libFuncs[i].name) {
			need[i] = true
		}
	}
	// A helper calls only helpers defined before it (Lua locals): one
	// pass from the last back to the first closes the set.
	for i := len(libFuncs) - 1; i >= 0; i-- {
		if !need[i] {
			continue
		}
		for j := 0; j < i; j++ {
			if calls(libFuncs[i].src, libFuncs[j].name) {
				need[j] = true
			}
		}
	}
	var b strings.Builder
	for i, f := range libFuncs {
		if need[i] {
			b.WriteString(f.src)
		}
	}
	return b.String()
}

var all = []*redis.Script{Enqueue, Complete, Heartbeat, Reclaim, Adopt, Forward, Housekeep, State, RetryDead, Cancel, ContAdd, Waiting, Activate, PurgeDead,
	GroupNew, GroupAdd, GroupEnd, GroupCont, GroupCancel, GroupEnq,
	JoinTTL, KidsAdd,
	LimAcquire, LimWait, LimRelease, Wake, RateLimit, CompareDel, Claim, DueMark, DueUpdate,
	RepDeclare, RepFire, RepRemove, RepMove, RepIndex, PartStep, PartTake, PartAppend, PartDone, BatchAdd, BatchFlush, BatchEnd, BatchAbort,
	WorkerReg, GroupPrune, GroupMk, QStats}

// Load loads every script into the server's script cache, so that EVALSHA
// inside pipelines finds them (go-redis does not fall back to EVAL there).
// It first asks which are there already (one SCRIPT EXISTS; on a cluster,
// go-redis asks every master and a script counts only when all have it) and
// loads only the others: every process of a fleet calls Load as it starts,
// and the server compiles each script it is sent again.
func Load(ctx context.Context, rdb redis.Scripter) error {
	shas := make([]string, len(all))
	for i, s := range all {
		shas[i] = s.Hash()
	}
	have, err := rdb.ScriptExists(ctx, shas...).Result()
	if err != nil || len(have) != len(all) {
		have = nil // load them all
	}
	for i, s := range all {
		if have != nil && have[i] {
			continue
		}
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("load lua scripts: %w", err)
		}
	}
	return nil
}
