// Package script holds the project's Lua scripts. Each .lua file opens with its
// KEYS/ARGV/return contract. Every state change of a task is one script, and
// every script that writes is safe to run twice (go-redis resends a command
// after a timeout or a broken connection).
package script

import (
	"context"
	_ "embed"
	"fmt"

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

// newScript puts the shared helpers of lib.lua in front of a script's body.
func newScript(body string) *redis.Script { return redis.NewScript(libSrc + "\n" + body) }

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
