#include "textflag.h"

// func x32Syscall(nr, a1, a2, a3 uintptr) uintptr
TEXT ·x32Syscall(SB),NOSPLIT,$0-40
	MOVQ nr+0(FP), AX
	MOVQ a1+8(FP), DI
	MOVQ a2+16(FP), SI
	MOVQ a3+24(FP), DX
	SYSCALL
	MOVQ AX, ret+32(FP)
	RET
