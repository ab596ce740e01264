#if canImport(Glibc)
import Glibc
private let systemRead = Glibc.read
#elseif canImport(Darwin)
import Darwin
private let systemRead = Darwin.read
#endif
import Foundation

/// Opening what a user names as input: only regular files, refused by type before a read
/// can block (a FIFO, a terminal or a socket would hang `open` or `read` forever), and read
/// whole only up to a size limit (configs, tokenizers and indexes are small; the weights
/// themselves are memory-mapped by `MappedFile`, never read).
public enum InputFile {
    /// A generous bound for the JSON and text files beside a model (T5's tokenizer.json is
    /// 2.4 MB, CLIP's vocab.json 1.6 MB).
    public static let defaultLimit = 256 << 20

    /// Opens `path` for reading without blocking and checks it is a regular file; returns
    /// the descriptor and size, or the reason it cannot be used.
    package static func openRegular(_ path: String) -> Result<(descriptor: Int32, size: Int), Refusal> {
        guard !path.isEmpty else { return .failure(Refusal("the path is empty")) }
        // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a
        // writer; regular files ignore the flag.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else {
            return .failure(Refusal(errno == ENOENT ? "no such file" : MappedFile.errnoText()))
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let reason = MappedFile.errnoText()
            close(descriptor)
            return .failure(Refusal(reason))
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            close(descriptor)
            return .failure(Refusal("not a regular file (\(kindName(status.st_mode)))"))
        }
        return .success((descriptor, Int(status.st_size)))
    }

    /// The whole file, or `fail(reason)`.
    public static func read<Failure: Error>(_ path: String, limit: Int = defaultLimit,
                                            orThrow fail: (String) -> Failure) throws(Failure) -> Data {
        let (descriptor, size): (Int32, Int)
        switch openRegular(path) {
        case let .success(opened): (descriptor, size) = opened
        case let .failure(refusal): throw fail(refusal.reason)
        }
        defer { close(descriptor) }
        guard size <= limit else { throw fail("\(size) bytes is larger than the \(limit)-byte limit for this kind of file") }
        var data = Data(count: size)
        var failure: String?
        data.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) in
            var done = 0
            while done < size {
                let count = systemRead(descriptor, buffer.baseAddress! + done, size - done)
                if count < 0, errno == EINTR { continue }
                if count < 0 { failure = MappedFile.errnoText(); return }
                if count == 0 { failure = "the file shrank while it was read"; return }
                done += count
            }
        }
        if let failure { throw fail(failure) }
        return data
    }

    /// The file as UTF-8 text, or `fail(reason)`.
    public static func text<Failure: Error>(_ path: String, limit: Int = defaultLimit,
                                            orThrow fail: (String) -> Failure) throws(Failure) -> String {
        let data = try read(path, limit: limit, orThrow: fail)
        guard let text = String(data: data, encoding: .utf8) else { throw fail("not UTF-8 text") }
        return text
    }

    /// Whether `path` names something that exists (of any type), without following it into a read.
    public static func exists(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0
    }

    /// The plain form: the error names the file and the reason.
    public static func read(_ path: String, limit: Int = defaultLimit) throws(Unreadable) -> Data {
        try read(path, limit: limit) { Unreadable(path: path, reason: $0) }
    }

    /// Why a named input cannot be read: one line with the path and the reason.
    public struct Unreadable: Error, Sendable, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "\(path): cannot read: \(reason)" }
    }

    package struct Refusal: Error {
        package let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    static func kindName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a folder"
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "not a plain file"
        }
    }
}
