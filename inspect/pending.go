package inspect

import "context"

func (i *Inspector) tasks(ctx context.Context, queue string, opts ListOpts) (TaskPage, error) {
	return TaskPage{}, errNotYet
}
func (i *Inspector) task(ctx context.Context, id string) (TaskInfo, error) {
	return TaskInfo{}, errNotYet
}
func (i *Inspector) retryDead(ctx context.Context, queue, kind string) (int, error) {
	return 0, errNotYet
}
func (i *Inspector) purgeDead(ctx context.Context, queue, kind string) (int, error) {
	return 0, errNotYet
}
func (i *Inspector) cancelAll(ctx context.Context, queue string, state State) (int, error) {
	return 0, errNotYet
}
func (i *Inspector) groups(ctx context.Context, queue string) ([]GroupInfo, error) {
	return nil, errNotYet
}
func (i *Inspector) repeats(ctx context.Context) ([]RepeatInfo, error) { return nil, errNotYet }
