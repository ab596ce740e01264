import Dispatch

/// Lets a non-Sendable closure cross into `concurrentPerform`. Safe here because every
/// kernel writes disjoint ranges and the call returns only when all chunks are done.
private struct UncheckedSendableBox<T>: @unchecked Sendable {
    let value: T
}

/// Splits `0..<count` into contiguous chunks of at least `minimumChunk` items and runs
/// them on up to `threads` cores with one `concurrentPerform`.
func parallelFor(_ count: Int, threads: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let chunkLimit = max(1, count / max(minimumChunk, 1))
    let chunks = min(chunkLimit, threads <= 1 ? 1 : threads * 4)
    if chunks <= 1 {
        body(0..<count)
        return
    }
    let per = (count + chunks - 1) / chunks
    withoutActuallyEscaping(body) { escapable in
        let box = UncheckedSendableBox(value: escapable)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let start = chunk * per
            let end = min(count, start + per)
            if start < end { box.value(start..<end) }
        }
    }
}
