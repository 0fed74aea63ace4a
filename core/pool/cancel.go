package pool

import (
	"context"
	"net"

	"github.com/sluicedb/sluice/core/wire"
)

// Cancel sends a CancelRequest for c's backend on a new connection to the
// same server and waits until the server has processed it (it closes that
// connection), bounded by ctx.
func (c *Conn) Cancel(ctx context.Context) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if _, err := nc.Write(wire.EncodeCancel(c.ProcessID, c.SecretKey)); err != nil {
		return err
	}
	var b [1]byte
	nc.Read(b[:])
	return nil
}
