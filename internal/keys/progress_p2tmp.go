package keys

// TEMPORARY (P2, until h-P1 is merged): P1 owns the real definitions.
func (q Queue) Progress(key string) string     { return q.tag + "pg:" + key }
func (q Queue) GroupProgress(id string) string { return q.tag + "gp:" + id }
