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
