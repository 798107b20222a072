package main

import (
	"context"
	"io"
)

func runVerity(_ context.Context, args []string, stdout io.Writer) error {
	return usagef("verity: not built yet")
}
