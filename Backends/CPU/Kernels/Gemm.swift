import LoRAFuse
import LoRAFuseCPUKernels

/// Single-precision GEMM, `C = A·B` (or `C += A·B`), for A in float32 and B in float32,
/// float16 or bfloat16, with any strides. Goto/BLIS structure: B is packed in blocks of
/// `kBlock × nBlock` into panels `nr` columns wide, A in blocks of `mBlock × kBlock` into
/// panels `mr` rows high; a register-blocked micro-kernel does the arithmetic — 14×32
/// with AVX-512 (28 zmm accumulators, C) where the CPU has it, else 6×16 with AVX2 (12 ymm
/// accumulators, Swift SIMD). Packing is also where narrow weights are widened, so
/// f16/bf16 weights are read in place and never expanded in memory.
/// The micro-kernel a GEMM runs with: its register tile and the A block (a multiple of `mr`).
struct GemmKernel: Sendable, Equatable {
    enum Instructions: String, Sendable { case avx2, avx512 }
    let instructions: Instructions
    let mr: Int
    let nr: Int
    let mBlock: Int

    static let avx2 = GemmKernel(instructions: .avx2, mr: 6, nr: 16, mBlock: 96)
    static let avx512 = GemmKernel(instructions: .avx512, mr: 14, nr: 32, mBlock: 112)
    static let hasAVX512 = lf_cpu_supports_avx512() != 0
    /// The fastest kernel this CPU runs.
    static let preferred: GemmKernel = hasAVX512 ? .avx512 : .avx2

    @inline(__always)
    func run(depth: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        if instructions == .avx512 {
            lf_gemm_kernel_14x32_avx512(depth, a, b, c, ldc, accumulate ? 1 : 0)
        } else {
            Gemm.microKernel(depth: depth, a: a, b: b, c: c, ldc: ldc, accumulate: accumulate)
        }
    }
}

enum Gemm {
    static let kBlock = 256
    static let nBlock = 3072

    /// `c[i·ldc + j] (+)= Σ_p a(i, p)·b(p, j)` for i < m, j < n.
    static func multiply(m: Int, n: Int, k: Int, a: MatrixOperand, b: MatrixOperand,
                         c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int,
                         kernel: GemmKernel = .preferred) {
        let (nr, mBlock) = (kernel.nr, kernel.mBlock)
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        let bLines = b.transposed  // line j of Bᵀ is column j of B
        let packedB = UnsafeMutablePointer<Float>.allocate(capacity: kBlock * roundUp(min(n, nBlock), nr))
        defer { packedB.deallocate() }

        var jc = 0
        while jc < n {
            let nc = min(nBlock, n - jc)
            let panelCount = (nc + nr - 1) / nr
            var pc = 0
            while pc < k {
                let kc = min(kBlock, k - pc)
                parallelFor(panelCount, threads: threads, minimumChunk: 8) { panels in
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: kc)
                    defer { scratch.deallocate() }
                    for panel in panels {
                        let column = jc + panel * nr
                        packPanel(bLines, firstLine: column, lineCount: min(nr, n - column), width: nr,
                                  depthStart: pc, depth: kc, into: packedB + panel * kc * nr, scratch: scratch)
                    }
                }
                let mBlocks = (m + mBlock - 1) / mBlock
                // Enough tasks to keep every core busy when m is small (LoRA vectors, single tokens).
                let nChunks = min(panelCount, max(1, (2 * threads + mBlocks - 1) / mBlocks))
                let panelsPerChunk = (panelCount + nChunks - 1) / nChunks
                let taskCount = mBlocks * nChunks
                let accumulateHere = accumulate || pc > 0
                let body = { (task: Int) in
                    let ic = (task / nChunks) * mBlock
                    let mc = min(mBlock, m - ic)
                    let firstPanel = (task % nChunks) * panelsPerChunk
                    let lastPanel = min(panelCount, firstPanel + panelsPerChunk)
                    guard firstPanel < lastPanel else { return }
                    computeBlock(a: a, rowStart: ic, rows: mc, depthStart: pc, depth: kc,
                                 packedB: packedB, panels: firstPanel..<lastPanel, columnStart: jc, n: n,
                                 c: c, ldc: ldc, accumulate: accumulateHere, kernel: kernel)
                }
                if threads <= 1 || taskCount == 1 {
                    for task in 0..<taskCount { body(task) }
                } else {
                    parallelFor(taskCount, threads: threads) { tasks in for task in tasks { body(task) } }
                }
                pc += kc
            }
            jc += nc
        }
    }

    @inline(__always)
    static func roundUp(_ value: Int, _ multiple: Int) -> Int { (value + multiple - 1) / multiple * multiple }

    /// Packs A's rows `rowStart..<rowStart+rows` and runs the micro-kernel over the given B panels.
    private static func computeBlock(a: MatrixOperand, rowStart: Int, rows: Int, depthStart: Int, depth: Int,
                                     packedB: UnsafeMutablePointer<Float>, panels: Range<Int>, columnStart: Int, n: Int,
                                     c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, kernel: GemmKernel) {
        let (mr, nr) = (kernel.mr, kernel.nr)
        let rowPanels = (rows + mr - 1) / mr
        let packedA = UnsafeMutablePointer<Float>.allocate(capacity: rowPanels * mr * depth + depth)
        defer { packedA.deallocate() }
        let scratch = packedA + rowPanels * mr * depth
        for panel in 0..<rowPanels {
            let row = rowStart + panel * mr
            packPanel(a, firstLine: row, lineCount: min(mr, rowStart + rows - row), width: mr,
                      depthStart: depthStart, depth: depth, into: packedA + panel * mr * depth, scratch: scratch)
        }
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: mr * nr)
        defer { tile.deallocate() }
        for panel in panels {
            let column = columnStart + panel * nr
            let columns = min(nr, n - column)
            let bPanel = packedB + panel * depth * nr
            for rowPanel in 0..<rowPanels {
                let row = rowStart + rowPanel * mr
                let rowCount = min(mr, rowStart + rows - row)
                let aPanel = packedA + rowPanel * mr * depth
                let target = c + row * ldc + column
                if rowCount == mr && columns == nr {
                    kernel.run(depth: depth, a: aPanel, b: bPanel, c: target, ldc: ldc, accumulate: accumulate)
                } else {
                    kernel.run(depth: depth, a: aPanel, b: bPanel, c: tile, ldc: nr, accumulate: false)
                    for i in 0..<rowCount {
                        for j in 0..<columns {
                            target[i * ldc + j] = accumulate ? target[i * ldc + j] + tile[i * nr + j] : tile[i * nr + j]
                        }
                    }
                }
            }
        }
    }

    /// Packs lines `firstLine..<firstLine+lineCount` of `source` (line i, depth p at
    /// `source[i, p]`) over depths `depthStart..<depthStart+depth` as `dst[p·width + i]`,
    /// zero-padding lines up to `width`.
    static func packPanel(_ source: MatrixOperand, firstLine: Int, lineCount: Int, width: Int,
                          depthStart: Int, depth: Int, into dst: UnsafeMutablePointer<Float>,
                          scratch: UnsafeMutablePointer<Float>) {
        if source.rowStride == 1 && source.columnStride != 1 {
            // Lines are adjacent in memory: read across lines at each depth.
            let columns = source.transposed
            for p in 0..<depth {
                let row = dst + p * width
                columns.loadRow(depthStart + p, column: firstLine, count: lineCount, into: row)
                if lineCount < width { (row + lineCount).update(repeating: 0, count: width - lineCount) }
            }
        } else {
            for i in 0..<lineCount {
                source.loadRow(firstLine + i, column: depthStart, count: depth, into: scratch)
                for p in 0..<depth { dst[p &* width &+ i] = scratch[p] }
            }
            if lineCount < width {
                for p in 0..<depth { (dst + p * width + lineCount).update(repeating: 0, count: width - lineCount) }
            }
        }
    }

    /// C[6×16] (+)= Apanel[depth×6]ᵀ · Bpanel[depth×16], all in registers.
    @inline(__always)
    static func microKernel(depth: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                            c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        typealias V = SIMD8<Float>
        var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
        var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
        let rawB = UnsafeRawPointer(b)
        var aPointer = a
        var offset = 0
        for _ in 0..<depth {
            let b0 = rawB.loadUnaligned(fromByteOffset: offset, as: V.self)
            let b1 = rawB.loadUnaligned(fromByteOffset: offset &+ 32, as: V.self)
            var broadcast = V(repeating: aPointer[0])
            c00.addProduct(broadcast, b0); c01.addProduct(broadcast, b1)
            broadcast = V(repeating: aPointer[1])
            c10.addProduct(broadcast, b0); c11.addProduct(broadcast, b1)
            broadcast = V(repeating: aPointer[2])
            c20.addProduct(broadcast, b0); c21.addProduct(broadcast, b1)
            broadcast = V(repeating: aPointer[3])
            c30.addProduct(broadcast, b0); c31.addProduct(broadcast, b1)
            broadcast = V(repeating: aPointer[4])
            c40.addProduct(broadcast, b0); c41.addProduct(broadcast, b1)
            broadcast = V(repeating: aPointer[5])
            c50.addProduct(broadcast, b0); c51.addProduct(broadcast, b1)
            aPointer += 6
            offset &+= 64
        }
        @inline(__always) func store(_ row: Int, _ low: V, _ high: V) {
            let raw = UnsafeMutableRawPointer(c + row &* ldc)
            if accumulate {
                raw.storeBytes(of: raw.loadUnaligned(as: V.self) + low, as: V.self)
                raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: 32, as: V.self) + high, toByteOffset: 32, as: V.self)
            } else {
                raw.storeBytes(of: low, as: V.self)
                raw.storeBytes(of: high, toByteOffset: 32, as: V.self)
            }
        }
        store(0, c00, c01); store(1, c10, c11); store(2, c20, c21)
        store(3, c30, c31); store(4, c40, c41); store(5, c50, c51)
    }
}
