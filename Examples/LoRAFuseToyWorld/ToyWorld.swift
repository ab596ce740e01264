import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFusePipeline

/// The bundled toy world (`Examples/toyworld/`, trained by `Tools/toyworld/train_world.py`): a
/// FLUX pipeline, content and style LoRAs behind trigger words, the scoring classifiers, and
/// optionally an AutoLoRA merger and a retriever. `world.json` lists them:
///
///     {"pipeline": "pipeline", "width": 32, "height": 32, "steps": 20, "max_sequence_length": 24,
///      "fusion_prompt": "a {content} in {style} style",
///      "content": [{"trigger": "zorbo", "lora": "loras/content-zorbo.safetensors", "label": "crescent", "caption": "…"}, …],
///      "style": [{"trigger": "lumeq", "lora": "loras/style-lumeq.safetensors", "label": "zigzag", "caption": "…"}, …],
///      "classifiers": {"object": "classifiers/object.safetensors", "style": "classifiers/style.safetensors"},
///      "judges": [{"name": "A", "object": "classifiers/object.safetensors", "style": "…"}, {"name": "B", …}],
///      "merger": "autolora-merger.safetensors", "demo_pairs": [[0, 0], [1, 3], …],
///      "retriever": "retriever.safetensors", "retrieval_queries": [{"lora": "loras/…", "caption": "…"}, …]}
///
/// Paths are relative to the folder. `label` is the class the classifiers should give an image
/// of that concept: the content's shape, the style's texture.
public struct ToyWorld: Sendable {
    /// A content or style concept: its trigger word, LoRA, the label its classifier uses and a caption.
    public struct Concept: Sendable, Hashable {
        public let trigger: String
        public let lora: String
        public let label: String
        public let caption: String
    }

    /// A pair of scoring classifiers: one for the content's shape, one for the style's texture.
    public struct Judge: Sendable, Hashable {
        public let name: String
        public let object: String
        public let style: String
    }

    public let folder: String
    public let pipeline: String
    public let width: Int
    public let height: Int
    public let steps: Int
    public let maxSequenceLength: Int
    public let fusionPrompt: String
    public let content: [Concept]
    public let style: [Concept]
    public let objectClassifier: String?
    public let styleClassifier: String?
    /// Every judge: `judges` in world.json, else `classifiers` as the only one (named A).
    public let judges: [Judge]
    public let merger: String?
    public let retriever: String?
    public let demoPairs: [(content: Int, style: Int)]
    /// Held-out captions for retrieval: each names the LoRA it should find.
    public let retrievalQueries: [(lora: String, caption: String)]

    /// The world described by `folder`/world.json.
    public static func load(folder: String) throws -> ToyWorld {
        let root = URL(fileURLWithPath: folder)
        let manifest = root.appendingPathComponent("world.json")
        guard InputFile.exists(manifest.path) else {
            throw ModelError.notAModel(path: folder, reason: "no world.json: not a LoRAFuse toy world (train one with Tools/toyworld/train_world.py)")
        }
        let data = try InputFile.read(manifest.path) { ModelError.notAModel(path: manifest.path, reason: "cannot read: \($0)") }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.notAModel(path: manifest.path, reason: "not a JSON object")
        }
        func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
        func number(_ key: String) throws -> Int {
            guard let value = object[key] as? Int, value > 0 else { throw ModelError.notAModel(path: manifest.path, reason: "`\(key)` must be a positive integer") }
            return value
        }
        func concepts(_ key: String) throws -> [Concept] {
            guard let list = object[key] as? [[String: Any]], !list.isEmpty else {
                throw ModelError.notAModel(path: manifest.path, reason: "`\(key)` must be a non-empty list of concepts")
            }
            return try list.map { entry in
                guard let trigger = entry["trigger"] as? String, let lora = entry["lora"] as? String, let label = entry["label"] as? String else {
                    throw ModelError.notAModel(path: manifest.path, reason: "each `\(key)` concept needs `trigger`, `lora` and `label`")
                }
                return Concept(trigger: trigger, lora: path(lora), label: label, caption: entry["caption"] as? String ?? trigger)
            }
        }
        guard let pipeline = object["pipeline"] as? String else { throw ModelError.notAModel(path: manifest.path, reason: "no `pipeline` folder") }
        let (width, height, steps, length) = (try number("width"), try number("height"), try number("steps"), try number("max_sequence_length"))
        let content = try concepts("content"), style = try concepts("style")
        let classifiers = object["classifiers"] as? [String: String] ?? [:]
        var judges: [Judge] = []
        if let listed = object["judges"] {
            guard let entries = listed as? [[String: String]], !entries.isEmpty else {
                throw ModelError.notAModel(path: manifest.path, reason: "`judges` must be a non-empty list of {name, object, style}")
            }
            for entry in entries {
                guard let name = entry["name"], let objectFile = entry["object"], let styleFile = entry["style"] else {
                    throw ModelError.notAModel(path: manifest.path, reason: "each `judges` entry needs `name`, `object` and `style`")
                }
                judges.append(Judge(name: name, object: path(objectFile), style: path(styleFile)))
            }
            guard Set(judges.map(\.name)).count == judges.count else {
                throw ModelError.notAModel(path: manifest.path, reason: "`judges` names must be distinct")
            }
        } else if let objectFile = classifiers["object"], let styleFile = classifiers["style"] {
            judges = [Judge(name: "A", object: path(objectFile), style: path(styleFile))]
        }
        var pairs: [(content: Int, style: Int)] = []
        for pair in object["demo_pairs"] as? [[Int]] ?? [] {
            guard pair.count == 2, content.indices.contains(pair[0]), style.indices.contains(pair[1]) else {
                throw ModelError.notAModel(path: manifest.path, reason: "`demo_pairs` entries must be [content index, style index]")
            }
            pairs.append((pair[0], pair[1]))
        }
        if pairs.isEmpty { pairs = (0..<min(content.count, style.count)).map { ($0, $0) } }
        var queries: [(lora: String, caption: String)] = []
        for query in object["retrieval_queries"] as? [[String: String]] ?? [] {
            guard let lora = query["lora"], let caption = query["caption"] else {
                throw ModelError.notAModel(path: manifest.path, reason: "`retrieval_queries` entries need `lora` and `caption`")
            }
            queries.append((path(lora), caption))
        }
        return ToyWorld(folder: folder, pipeline: path(pipeline), width: width, height: height, steps: steps, maxSequenceLength: length,
                        fusionPrompt: object["fusion_prompt"] as? String ?? "a {content} in {style} style",
                        content: content, style: style, objectClassifier: classifiers["object"].map(path),
                        styleClassifier: classifiers["style"].map(path), judges: judges, merger: (object["merger"] as? String).map(path),
                        retriever: (object["retriever"] as? String).map(path), demoPairs: pairs,
                        retrievalQueries: queries)
    }

    /// The prompt that asks for both concepts.
    public func prompt(content: Concept, style: Concept) -> String {
        fusionPrompt.replacingOccurrences(of: "{content}", with: content.trigger).replacingOccurrences(of: "{style}", with: style.trigger)
    }

    /// `count` (content, style) pairs for evaluation: every content concept with a style
    /// concept chosen by a fixed rotation, cycling until there are `count`.
    public func evaluationPairs(_ count: Int) -> [(content: Int, style: Int)] {
        (0..<count).map { index in (index % content.count, (index + index / content.count * 3 + 1) % style.count) }
    }
}

/// Lays out equally sized RGB images in a grid, each scaled up by pixel repetition, with gaps;
/// optional titles above the columns and left of the rows (upper-case 5×7 bitmap text).
public enum ImageGrid {
    /// Images in rows and columns on one canvas, each scaled up by `scale`, `gap` pixels apart.
    public static func compose(_ rows: [[[UInt8]]], cellWidth: Int, cellHeight: Int, scale: Int = 1, gap: Int = 2,
                               background: (UInt8, UInt8, UInt8) = (255, 255, 255), columnTitles: [String] = [],
                               rowTitles: [String] = [], textScale: Int = 2) -> (pixels: [UInt8], width: Int, height: Int) {
        let columns = rows.map(\.count).max() ?? 0
        let (cw, ch) = (cellWidth * scale, cellHeight * scale)
        let titleHeight = columnTitles.isEmpty ? 0 : BitmapFont.height * textScale + 2 * gap
        let titleWidth = rowTitles.map { BitmapFont.width($0) * textScale }.max().map { $0 + 2 * gap } ?? 0
        let width = titleWidth + columns * cw + (columns + 1) * gap
        let height = titleHeight + rows.count * ch + (rows.count + 1) * gap
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for index in stride(from: 0, to: pixels.count, by: 3) {
            (pixels[index], pixels[index + 1], pixels[index + 2]) = background
        }
        for (column, title) in columnTitles.enumerated() {
            let left = titleWidth + gap + column * (cw + gap)
            BitmapFont.draw(title, x: left + max(0, (cw - BitmapFont.width(title) * textScale) / 2), y: gap, scale: textScale,
                            into: &pixels, width: width, height: height)
        }
        for (row, title) in rowTitles.enumerated() {
            let top = titleHeight + gap + row * (ch + gap)
            BitmapFont.draw(title, x: gap, y: top + max(0, (ch - BitmapFont.height * textScale) / 2), scale: textScale,
                            into: &pixels, width: width, height: height)
        }
        for (row, cells) in rows.enumerated() {
            for (column, cell) in cells.enumerated() where cell.count == cellWidth * cellHeight * 3 {
                let (left, top) = (titleWidth + gap + column * (cw + gap), titleHeight + gap + row * (ch + gap))
                for y in 0..<ch { for x in 0..<cw {
                    let source = ((y / scale) * cellWidth + x / scale) * 3, target = ((top + y) * width + left + x) * 3
                    pixels[target] = cell[source]
                    pixels[target + 1] = cell[source + 1]
                    pixels[target + 2] = cell[source + 2]
                } }
            }
        }
        return (pixels, width, height)
    }
}

/// A 5×7 bitmap font: A–Z, 0–9, '+', '-', '.', space (lower case is drawn as upper case;
/// other characters as a box).
enum BitmapFont {
    static let height = 7
    static let advance = 6

    static let glyphs: [Character: [UInt8]] = [
        "A": [14, 17, 17, 31, 17, 17, 17], "B": [30, 17, 17, 30, 17, 17, 30], "C": [14, 17, 16, 16, 16, 17, 14],
        "D": [30, 17, 17, 17, 17, 17, 30], "E": [31, 16, 16, 30, 16, 16, 31], "F": [31, 16, 16, 30, 16, 16, 16],
        "G": [14, 17, 16, 23, 17, 17, 15], "H": [17, 17, 17, 31, 17, 17, 17], "I": [14, 4, 4, 4, 4, 4, 14],
        "J": [7, 2, 2, 2, 2, 18, 12], "K": [17, 18, 20, 24, 20, 18, 17], "L": [16, 16, 16, 16, 16, 16, 31],
        "M": [17, 27, 21, 21, 17, 17, 17], "N": [17, 17, 25, 21, 19, 17, 17], "O": [14, 17, 17, 17, 17, 17, 14],
        "P": [30, 17, 17, 30, 16, 16, 16], "Q": [14, 17, 17, 17, 21, 18, 13], "R": [30, 17, 17, 30, 20, 18, 17],
        "S": [15, 16, 16, 14, 1, 1, 30], "T": [31, 4, 4, 4, 4, 4, 4], "U": [17, 17, 17, 17, 17, 17, 14],
        "V": [17, 17, 17, 17, 17, 10, 4], "W": [17, 17, 17, 21, 21, 21, 10], "X": [17, 17, 10, 4, 10, 17, 17],
        "Y": [17, 17, 10, 4, 4, 4, 4], "Z": [31, 1, 2, 4, 8, 16, 31],
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12], "+": [0, 4, 4, 31, 4, 4, 0], "-": [0, 0, 0, 31, 0, 0, 0],
        ".": [0, 0, 0, 0, 0, 12, 12], " ": [0, 0, 0, 0, 0, 0, 0],
    ]
    static let unknown: [UInt8] = [31, 17, 17, 17, 17, 17, 31]

    static func width(_ text: String) -> Int { text.isEmpty ? 0 : text.count * advance - 1 }

    static func draw(_ text: String, x: Int, y: Int, scale: Int, color: (UInt8, UInt8, UInt8) = (0, 0, 0),
                     into pixels: inout [UInt8], width: Int, height: Int) {
        for (index, character) in text.uppercased().enumerated() {
            let rows = glyphs[character] ?? unknown
            for (row, bits) in rows.enumerated() { for column in 0..<5 where bits & (16 >> column) != 0 {
                for dy in 0..<scale { for dx in 0..<scale {
                    let px = x + (index * advance + column) * scale + dx, py = y + row * scale + dy
                    guard px >= 0, px < width, py >= 0, py < height else { continue }
                    (pixels[(py * width + px) * 3], pixels[(py * width + px) * 3 + 1], pixels[(py * width + px) * 3 + 2]) = color
                } }
            } }
        }
    }
}
