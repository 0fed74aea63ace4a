package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBorrowersInTightLoopsAllProgress(t *testing.T) {
	p, _ := newTestPool(Settings{MaxConnections: 2, MaxIdleConnections: 2, BorrowTimeout: 2 * time.Second})
	defer p.Close()
	var counts [4]atomic.Int64
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for i := range counts {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(stop) {
				c, err := p.Borrow(context.Background())
				if err != nil {
					t.Errorf("borrower %d: %v", i, err)
					return
				}
				time.Sleep(100 * time.Microsecond)
				p.Return(c)
				counts[i].Add(1)
			}
		}(i)
	}
	wg.Wait()
	for i := range counts {
		if counts[i].Load() == 0 {
			t.Errorf("borrower %d starved", i)
		}
	}
}
