package script

import _ "embed"

//go:embed shardcas.lua
var shardCASSrc string

// ShardCAS replaces a sharded queue's registry entry if it is still the
// one read before (internal/store/shard21.go, growing a queue).
var ShardCAS = newScript(shardCASSrc)

// Loaded at New with the others.
func init() { all = append(all, ShardCAS) }
