/// Consecutive index ranges over `count` items whose `bytes` add up to at most `limit`
/// each (an item larger than the limit gets a range of its own): how layer-by-layer work
/// (merging LoRAs, K-LoRA statistics) is cut into graphs of bounded memory.
package func boundedBatches(_ count: Int, limit: Int, bytes: (Int) -> Int) -> [Range<Int>] {
    var batches: [Range<Int>] = []
    var start = 0, total = 0
    for index in 0..<count {
        let size = bytes(index)
        if index > start && total + size > limit {
            batches.append(start..<index)
            start = index
            total = 0
        }
        total += size
    }
    if start < count { batches.append(start..<count) }
    return batches
}
