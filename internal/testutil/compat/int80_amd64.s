// SPDX-License-Identifier: Apache-2.0

#include "textflag.h"

// func int80(nr, a1, a2 uintptr) uintptr
TEXT ·int80(SB), NOSPLIT, $0-32
	MOVQ nr+0(FP), AX
	MOVQ a1+8(FP), BX
	MOVQ a2+16(FP), CX
	XORQ DX, DX
	XORQ SI, SI
	XORQ DI, DI
	INT  $0x80
	MOVQ AX, ret+24(FP)
	RET
