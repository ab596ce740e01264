import Foundation
import LoRAFuseCPUKernels

/// Exact Top-K selection for K-LoRA's magnitude statistics.
enum SelectionKernels {
    /// [Σ of the k largest |x|, Σ |x|] over all `inputs` taken as one set. The magnitudes
    /// are copied once, then a three-way quickselect (median-of-three pivots; runs of equal
    /// values are settled in one pass, so ties cannot make it quadratic) leaves the k
    /// largest at the end. Sums in Double.
    static func topKAbsSum(_ inputs: [(pointer: UnsafePointer<Float>, count: Int)], k: Int) -> (top: Double, total: Double) {
        let count = inputs.reduce(0) { $0 + $1.count }
        let magnitudes = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        defer { magnitudes.deallocate() }
        var total = 0.0
        var position = 0
        for (pointer, length) in inputs {
            for index in 0..<length {
                let value = abs(pointer[index])
                magnitudes[position &+ index] = value
                total += Double(value)
            }
            position += length
        }
        let target = count - k
        var low = 0, high = count - 1
        while low < high {
            let middle = low + (high - low) / 2
            let a = magnitudes[low], b = magnitudes[middle], c = magnitudes[high]
            let pivot = max(min(a, b), min(max(a, b), c))
            var less = low, index = low, greater = high
            while index <= greater {
                let value = magnitudes[index]
                if value < pivot {
                    magnitudes.swapAt(less, index)
                    less += 1
                    index += 1
                } else if value > pivot {
                    magnitudes.swapAt(index, greater)
                    greater -= 1
                } else {
                    index += 1
                }
            }
            if target < less { high = less - 1 } else if target > greater { low = greater + 1 } else { break }
        }
        var top = 0.0
        for index in target..<count { top += Double(magnitudes[index]) }
        return (top, total)
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    @inline(__always) func swapAt(_ i: Int, _ j: Int) {
        let value = self[i]
        self[i] = self[j]
        self[j] = value
    }
}

/// The k largest values seen, as a binary min-heap: the root is the bar a new value must pass.
struct TopKHeap {
    let capacity: Int
    private(set) var values: [Float]

    init(capacity: Int) {
        self.capacity = capacity
        values = []
        values.reserveCapacity(capacity)
    }

    /// Values at or below this cannot enter (−1 while the heap is not full: magnitudes are ≥ 0).
    var bar: Float { values.count < capacity ? -1 : values[0] }

    mutating func insert(_ value: Float) {
        if values.count < capacity {
            values.append(value)
            var child = values.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard values[parent] > values[child] else { break }
                values.swapAt(parent, child)
                child = parent
            }
            return
        }
        guard value > values[0] else { return }
        values[0] = value
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < capacity && values[left] < values[smallest] { smallest = left }
            if right < capacity && values[right] < values[smallest] { smallest = right }
            guard smallest != parent else { break }
            values.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

extension SelectionKernels {
    struct LowRankPart {
        /// scale · up, widened to float32, [rows, rank].
        let scaledUp: [Float]
        /// down widened to float32, each row zero-padded to `stride` (a multiple of 16).
        let down: [Float]
        let rows: Int, rank: Int, columns: Int
        var stride: Int { (columns + 15) / 16 * 16 }

        init(scaledUp: [Float], down: MatrixOperand, rows: Int, rank: Int, columns: Int) {
            self.scaledUp = scaledUp
            self.rows = rows
            self.rank = rank
            self.columns = columns
            let stride = (columns + 15) / 16 * 16
            var widened = [Float](repeating: 0, count: rank * stride)
            widened.withUnsafeMutableBufferPointer { buffer in
                for row in 0..<rank { down.loadRow(row, column: 0, count: columns, into: buffer.baseAddress! + row * stride) }
            }
            self.down = widened
        }
    }

    /// [Σ of the k largest |ΔW|, Σ |ΔW|] over ΔWᵢ = upᵢ·downᵢ (up already scaled), never
    /// storing ΔW: four rows at a time are formed by a register-blocked C kernel
    /// (`lf_lowrank_abs_rows`) into a cache-sized buffer of magnitudes, which is only read
    /// again when its maximum can enter the top k. Each task keeps its own k largest in a
    /// min-heap; the tasks' heaps hold the global top k between them.
    static func lowRankTopKAbsSum(_ parts: [LowRankPart], k: Int, threads: Int) -> (top: Double, total: Double) {
        var blocks: [(part: Int, row: Int, count: Int)] = []
        for (index, part) in parts.enumerated() {
            for row in Swift.stride(from: 0, to: part.rows, by: 16) { blocks.append((index, row, min(16, part.rows - row))) }
        }
        let lock = NSLock()
        var heaps: [[Float]] = []
        var total = 0.0
        parallelFor(blocks.count, threads: threads) { range in
            var heap = TopKHeap(capacity: k)
            var localTotal = 0.0
            let width = range.map { parts[blocks[$0].part].columns }.max() ?? 0
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(4 * width, 1))
            defer { buffer.deallocate() }
            for blockIndex in range {
                let (partIndex, firstRow, count) = blocks[blockIndex]
                let part = parts[partIndex]
                part.scaledUp.withUnsafeBufferPointer { up in
                    part.down.withUnsafeBufferPointer { down in
                        var row = firstRow
                        while row < firstRow + count {
                            let rows = min(4, firstRow + count - row)
                            let peak = lf_lowrank_abs_rows(up.baseAddress! + row * part.rank, rows, part.rank, down.baseAddress!,
                                                           part.stride, part.columns, buffer, &localTotal)
                            if peak > heap.bar {
                                for index in 0..<(rows * part.columns) where buffer[index] > heap.bar { heap.insert(buffer[index]) }
                            }
                            row += rows
                        }
                    }
                }
            }
            lock.withLock {
                heaps.append(heap.values)
                total += localTotal
            }
        }
        let candidates = heaps.joined().sorted(by: >)
        return (candidates.prefix(k).reduce(0.0) { $0 + Double($1) }, total)
    }
}
