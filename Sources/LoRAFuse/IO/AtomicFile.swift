import CSignalCleanup
#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

/// Files written whole or not at all: the bytes go to a temporary file beside the target
/// (created exclusively), are flushed to disk, and the file is renamed over the target; on
/// any failure the temporary file is removed and the target is untouched.
public enum AtomicFile {
    /// An open temporary file.
    public struct Handle {
        let descriptor: Int32

        /// Writes every byte, retrying short writes; returns the error text on failure.
        public func write(_ bytes: UnsafeRawBufferPointer) -> String? {
            guard var pointer = bytes.baseAddress else { return nil }
            var remaining = bytes.count
            while remaining > 0 {
                let written = systemWrite(descriptor, pointer, min(remaining, 1 << 30))
                if written < 0 {
                    if errno == EINTR { continue }
                    return MappedFile.errnoText()
                }
                pointer += written
                remaining -= written
            }
            return nil
        }

        /// Appends `bytes`; returns the failure, or nil.
        public func write(_ bytes: [UInt8]) -> String? { bytes.withUnsafeBytes { write($0) } }
    }

    /// Writes `path` through `fill` (which returns an error text, or nil when it wrote all);
    /// returns an error text, or nil once the file is in place.
    public static func write(_ path: String, fill: (Handle) -> String?) -> String? {
        let transaction = Transaction()
        return transaction.stage(path, fill: fill) ?? transaction.commit()
    }

    /// Stages `path` in `transaction` (it lands at the commit), or without one writes it now.
    public static func write(_ path: String, in transaction: Transaction?, fill: (Handle) -> String?) -> String? {
        transaction.map { $0.stage(path, fill: fill) } ?? write(path, fill: fill)
    }

    /// Installs the signal handlers that remove temporary files (done by every transaction;
    /// a program calls it at start so the signals are unblocked on its main thread too).
    public static func installSignalCleanup() { lf_cleanup_install() }

    /// Several files that land together or not at all (an image and its latents): each is
    /// written in full to its temporary file first, and only when every one is on disk are
    /// they renamed into place. A transaction that is not committed removes its files.
    /// While a temporary file exists, SIGINT, SIGTERM, SIGHUP and SIGQUIT remove it before
    /// the process dies of the signal.
    public final class Transaction {
        private var staged: [(path: String, temporary: String, slot: Int32)] = []

        /// An empty transaction; files written in it land together at `commit()` or not at all.
        public init() { lf_cleanup_install() }

        /// Writes `path`'s content to its temporary file; returns an error text (and
        /// discards everything staged so far) or nil.
        public func stage(_ path: String, fill: (Handle) -> String?) -> String? {
            let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let slot = lf_cleanup_add(temporary)
            let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                let failure = MappedFile.errnoText()
                lf_cleanup_remove(slot)
                discard()
                return failure
            }
            staged.append((path, temporary, slot))
            var failure = fill(Handle(descriptor: descriptor))
            if failure == nil, fsync(descriptor) != 0 { failure = MappedFile.errnoText() }
            if close(descriptor) != 0, failure == nil { failure = MappedFile.errnoText() }
            if failure != nil { discard() }
            return failure
        }

        /// Renames every staged file into place; returns an error text or nil. Should a
        /// rename fail after others succeeded, the files already placed are removed too.
        public func commit() -> String? {
            var placed: [String] = []
            for (index, file) in staged.enumerated() {
                if rename(file.temporary, file.path) != 0 {
                    let failure = "rename failed: \(MappedFile.errnoText())"
                    for path in placed { unlink(path) }
                    staged.removeFirst(index)
                    discard()
                    return failure
                }
                lf_cleanup_remove(file.slot)
                placed.append(file.path)
            }
            staged = []
            return nil
        }

        /// Removes every staged temporary file.
        public func discard() {
            for file in staged {
                unlink(file.temporary)
                lf_cleanup_remove(file.slot)
            }
            staged = []
        }

        deinit { discard() }
    }
}
