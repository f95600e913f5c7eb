package keys

// The resume records of package upload's multipart uploads. Both
// keys live in the task's queue slot, so that one script writes a record and
// its index together.

// Upload is the hash recording the multipart upload of the task with key
// key: its upload id, bucket, object key, part size, source fingerprint and
// one field per part stored ("p:<n>": its MD5, SHA-256 and size). A later
// attempt of the task reads it to resume the upload.
func (q Queue) Upload(key string) string { return q.tag + "up:" + key }

// Uploads is the sorted set of the queue's task keys with an open multipart
// upload (score: when the record was made, ms of Redis time), for the
// sweeper that aborts the uploads of tasks that ended.
func (q Queue) Uploads() string { return q.tag + "ups" }
