package gptprio_test

import (
	"fmt"

	"github.com/updog/updog/gptprio"
)

func ExampleAttr() {
	// A BOOT partition of a freshly built image: priority 1, successful.
	a := gptprio.Attr(0x0101000000000000)
	fmt.Println(a.Priority(), a.Tries(), a.Successful(), a.WillBoot())

	// Upgrade pending: priority 2, one try, not yet successful.
	b := gptprio.Attr(0).WithPriority(2).WithTries(1)
	fmt.Printf("%#016x\n", uint64(b))
	// Output:
	// 1 0 true true
	// 0x0012000000000000
}
