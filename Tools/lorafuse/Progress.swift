import Foundation

/// `[######..........]` for `done` of `total`, `width` characters inside the brackets.
func progressBar(_ done: Int, of total: Int, width: Int = 24) -> String {
    let filled = width * min(done, total) / max(1, total)
    return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
}

/// Whether progress lines go to stderr: only to a terminal, and never beside `--json`.
func progressEnabled(json: Bool) -> Bool { !json && isatty(STDERR_FILENO) != 0 }

/// A one-line progress bar on a terminal's stderr: steps done, seconds per step, ETA.
final class ProgressReporter {
    let enabled: Bool
    private var total = 0.0

    init(enabled: Bool) { self.enabled = enabled }

    func report(step: Int, steps: Int, seconds: Double) {
        total += seconds
        guard enabled else { return }
        let perStep = total / Double(step)
        let line = String(format: "\r%@ step %d/%d  %.2f s/step  ETA %.1f s ", progressBar(step, of: steps), step, steps, perStep,
                          perStep * Double(steps - step))
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// A one-line bar for long work — a forward pass (nodes done of the graph's) or a load
/// (bytes made resident) — with the elapsed seconds, redrawn at most ten times a second;
/// `ExecutionOptions.progress` or `makeResident(_:progress:)` feeds it.
final class ForwardProgress: @unchecked Sendable {
    let enabled: Bool
    let label: String
    private let lock = NSLock()
    private var start = DispatchTime.now().uptimeNanoseconds
    private var lastDraw: UInt64 = 0
    private var drawn = false

    init(enabled: Bool, label: String) {
        self.enabled = enabled
        self.label = label
    }

    /// Restarts the clock for the next pass.
    func begin() { lock.withLock { start = DispatchTime.now().uptimeNanoseconds } }

    /// For `ExecutionOptions.progress`.
    var callback: (@Sendable (Int, Int) -> Void)? {
        guard enabled else { return nil }
        return { [self] done, total in draw(done, total) }
    }

    private func draw(_ done: Int, _ total: Int) {
        lock.withLock {
            let now = DispatchTime.now().uptimeNanoseconds
            guard done >= total || now - lastDraw > 100_000_000 else { return }
            lastDraw = now
            drawn = true
            let seconds = Double(now - start) / 1e9
            let line = String(format: "\r%@ %@ %d%%  %.1f s ", progressBar(done, of: total), label, 100 * done / max(1, total), seconds)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    func finish() {
        lock.withLock { if drawn { FileHandle.standardError.write(Data("\n".utf8)); drawn = false } }
    }
}
