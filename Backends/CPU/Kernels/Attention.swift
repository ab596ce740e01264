import LoRAFuse
import LoRAFuseCPUKernels

/// Attention and rotary embedding on the [B, L, H, D] layout.
enum AttentionKernels {
    /// Rotates each pair (x[2i], x[2i+1]) of every head by the angle of frequency i at
    /// that position: (a, b) → (a·cos − b·sin, b·cos + a·sin).
    static func rotaryEmbedding(_ x: UnsafePointer<Float>, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                                out: UnsafeMutablePointer<Float>, batch: Int, length: Int, heads: Int, headDim: Int, threads: Int) {
        let half = headDim / 2
        parallelFor(batch * length, threads: threads, minimumChunk: 16) { range in
            for row in range {
                let position = row % length
                let c = cos + position * half, s = sin + position * half
                for head in 0..<heads {
                    let base = (row * heads + head) * headDim
                    for i in 0..<half {
                        let a = x[base + 2 * i], b = x[base + 2 * i + 1]
                        out[base + 2 * i] = a * c[i] - b * s[i]
                        out[base + 2 * i + 1] = b * c[i] + a * s[i]
                    }
                }
            }
        }
    }

    /// softmax(scale·Q·Kᵀ + mask)·V per batch and head, a block of queries at a time:
    /// the scores of one block (`queryBlock × Lk`) are the only temporary. (head, query
    /// block) tasks run in parallel, each with single-threaded products.
    static func attention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          mask: UnsafePointer<Float>?, maskShape: Shape?, out: UnsafeMutablePointer<Float>,
                          batch: Int, queryLength: Int, keyLength: Int, heads: Int, headDim: Int,
                          scale: Float, causal: Bool, threads: Int, blas: OpenBLAS? = nil, kernel: GemmKernel = .preferred,
                          pool: CPUMemoryPool = .shared) {
        let rowStride = heads * headDim
        // Mask strides over (batch, head, query, key); 0 where the mask broadcasts.
        var maskStrides = (batch: 0, head: 0, query: keyLength)
        if let maskShape, maskShape.rank == 4 {
            maskStrides.batch = maskShape[0] == 1 ? 0 : maskShape[1] * queryLength * keyLength
            maskStrides.head = maskShape[1] == 1 ? 0 : queryLength * keyLength
        }
        func operands(_ b: Int, _ head: Int, _ firstQuery: Int) -> (MatrixOperand, MatrixOperand, MatrixOperand) {
            (MatrixOperand(base: q + (b * queryLength + firstQuery) * rowStride + head * headDim, dtype: .float32, rowStride: rowStride, columnStride: 1),
             MatrixOperand(base: k + b * keyLength * rowStride + head * headDim, dtype: .float32, rowStride: rowStride, columnStride: 1),
             MatrixOperand(base: v + b * keyLength * rowStride + head * headDim, dtype: .float32, rowStride: rowStride, columnStride: 1))
        }
        /// Scale, mask, causal cut and the unnormalised softmax of one row of scores, in
        /// place; returns the factor (1 / Σ) its output row is scaled by after P·V.
        let avx512 = kernel.instructions == .avx512
        func softmax(_ line: UnsafeMutablePointer<Float>, scale: Float) -> Float {
            avx512 ? lf_softmax_row_avx512(line, line, keyLength, scale)
                : NormalizationKernels.exponentiateRow(line, line, keyLength, scale: scale)
        }
        func exponentiateRow(_ line: UnsafeMutablePointer<Float>, b: Int, head: Int, query: Int) -> Float {
            guard mask != nil || causal else { return softmax(line, scale: scale) }
            for j in 0..<keyLength { line[j] *= scale }
            if let mask {
                let maskLine = mask + b * maskStrides.batch + head * maskStrides.head + query * maskStrides.query
                for j in 0..<keyLength { line[j] += maskLine[j] }
            }
            if causal {
                // Query i sees keys j ≤ i + (Lk − Lq): the usual bottom-right alignment.
                let visible = max(0, min(keyLength, query + 1 + keyLength - queryLength))
                for j in visible..<keyLength { line[j] = -.infinity }
            }
            return softmax(line, scale: 1)
        }

        if avx512 {
            stripAttention(q: q, k: k, v: v, out: out, batch: batch, queryLength: queryLength, keyLength: keyLength,
                           heads: heads, headDim: headDim, threads: threads, pool: pool, exponentiateRow: exponentiateRow)
            return
        }
        // With BLAS, blocks through single-threaded BLAS (with K = head dim the products are
        // too thin for OpenBLAS's own threading to pay off), sized so one block's scores stay
        // near a core's L2 (≤ 2 MiB); otherwise blocks of 128.
        let useBLAS = blas != nil && queryLength * keyLength >= 128 * 128
        let queryBlock = useBLAS ? min(queryLength, max(32, (2 << 20) / max(1, keyLength * 4))) : 128
        func multiply(m: Int, n: Int, k: Int, a: MatrixOperand, b: MatrixOperand, c: UnsafeMutablePointer<Float>, ldc: Int) {
            if useBLAS, let blas, blas.multiply(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: false) { return }
            Gemm.multiply(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: false, threads: 1, kernel: kernel)
        }
        if useBLAS { blas?.setThreadCount(1) }
        defer { if useBLAS { blas?.setThreadCount(threads) } }
        let blocks = (queryLength + queryBlock - 1) / queryBlock
        parallelFor(batch * heads * blocks, threads: threads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: queryBlock * keyLength)
            let inverses = UnsafeMutablePointer<Float>.allocate(capacity: queryBlock)
            defer { scores.deallocate(); inverses.deallocate() }
            for task in range {
                let block = task % blocks, head = (task / blocks) % heads, b = task / (blocks * heads)
                let firstQuery = block * queryBlock
                let rows = min(queryBlock, queryLength - firstQuery)
                let (qOperand, kOperand, vOperand) = operands(b, head, firstQuery)
                multiply(m: rows, n: keyLength, k: headDim, a: qOperand, b: kOperand.transposed, c: scores, ldc: keyLength)
                for row in 0..<rows {
                    inverses[row] = exponentiateRow(scores + row * keyLength, b: b, head: head, query: firstQuery + row)
                }
                let output = out + (b * queryLength + firstQuery) * rowStride + head * headDim
                multiply(m: rows, n: headDim, k: keyLength,
                         a: MatrixOperand(base: scores, dtype: .float32, rowStride: keyLength, columnStride: 1),
                         b: vOperand, c: output, ldc: rowStride)
                for row in 0..<rows {
                    let line = output + row * rowStride, inverse = inverses[row]
                    for j in 0..<headDim { line[j] *= inverse }
                }
            }
        }
    }

    /// The AVX-512 path: K and V of every head are packed once into 32-wide panels, then
    /// each task takes a strip of 14 queries of one head through three steps that stay in
    /// cache — the strip's scores against all keys (a 14×32 register tile per key panel),
    /// the unnormalised softmax of each row, and P·V (a 14×32 tile per head-dim panel,
    /// scaled by 1/Σ on the way out). Per strip the score rows are 14 × Lk floats, so no
    /// Lq × Lk matrix exists, and unlike OpenBLAS called per block nothing is re-packed.
    private static func stripAttention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                       out: UnsafeMutablePointer<Float>, batch: Int, queryLength: Int, keyLength: Int,
                                       heads: Int, headDim: Int, threads: Int, pool: CPUMemoryPool,
                                       exponentiateRow: (UnsafeMutablePointer<Float>, Int, Int, Int) -> Float) {
        let strip = 14, panel = 32
        let paddedKeys = (keyLength + panel - 1) / panel * panel
        let paddedDepth = (headDim + panel - 1) / panel * panel
        let keysPerHead = paddedKeys * headDim, valuesPerHead = paddedKeys * paddedDepth
        let rowStride = heads * headDim
        let scratchBytes = batch * heads * (keysPerHead + valuesPerHead) * MemoryLayout<Float>.stride
        let region = pool.acquire(scratchBytes)
        let packed = region?.pointer.assumingMemoryBound(to: Float.self)
            ?? UnsafeMutablePointer<Float>.allocate(capacity: scratchBytes / MemoryLayout<Float>.stride)
        defer { if let region { pool.release(region) } else { packed.deallocate() } }
        parallelFor(batch * heads, threads: threads) { range in
            for task in range {
                let b = task / heads, head = task % heads
                let offset = b * keyLength * rowStride + head * headDim
                let base = packed + task * (keysPerHead + valuesPerHead)
                lf_attention_pack_keys(k + offset, rowStride, keyLength, headDim, base)
                lf_attention_pack_values(v + offset, rowStride, keyLength, headDim, base + keysPerHead)
            }
        }
        let strips = (queryLength + strip - 1) / strip
        parallelFor(batch * heads * strips, threads: threads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: strip * paddedKeys)
            let workspace = UnsafeMutablePointer<Float>.allocate(capacity: strip * max(paddedKeys, headDim))
            let inverses = UnsafeMutablePointer<Float>.allocate(capacity: strip)
            defer { scores.deallocate(); workspace.deallocate(); inverses.deallocate() }
            for task in range {
                let index = task % strips, head = (task / strips) % heads, b = task / (strips * heads)
                let firstQuery = index * strip
                let rows = min(strip, queryLength - firstQuery)
                let base = packed + (b * heads + head) * (keysPerHead + valuesPerHead)
                let queryOffset = (b * queryLength + firstQuery) * rowStride + head * headDim
                lf_attention_scores_avx512(q + queryOffset, rowStride, rows, headDim, base, keyLength, scores, paddedKeys, workspace)
                for row in 0..<rows {
                    inverses[row] = exponentiateRow(scores + row * paddedKeys, b, head, firstQuery + row)
                }
                lf_attention_values_avx512(scores, paddedKeys, rows, keyLength, base + keysPerHead, headDim, inverses,
                                           out + queryOffset, rowStride, workspace)
            }
        }
    }
}
