package topology

import (
	"testing"
	"time"
)

func TestPublishWakesWaitersOnlyOnChange(t *testing.T) {
	c := NewCluster("main")
	if c.Current() != nil {
		t.Fatal("a snapshot before the first Publish")
	}
	ch := c.Changed()
	if !c.Publish(Fixed{Writer: "a:1", Replicas: []string{"b:1"}}.Snapshot()) {
		t.Fatal("the first snapshot is a change")
	}
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Changed not closed by Publish")
	}
	ch = c.Changed()
	if c.Publish(Fixed{Writer: "a:1", Replicas: []string{"b:1"}}.Snapshot()) {
		t.Fatal("the same endpoints reported as a change")
	}
	select {
	case <-ch:
		t.Fatal("woken without a change")
	default:
	}
	c.Publish(Snapshot{})
	<-ch
	if s := c.Current(); s.Writer != nil || len(s.Replicas) != 0 {
		t.Fatalf("after losing the writer: %+v", s)
	}
}
