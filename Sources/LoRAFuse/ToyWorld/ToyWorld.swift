import Foundation

/// The bundled toy world (`Examples/toyworld/`, trained by `Tools/toyworld/train_world.py`): a
/// FLUX pipeline, content and style LoRAs behind trigger words, the scoring classifiers, and
/// optionally an AutoLoRA merger and a retriever. `world.json` lists them:
///
///     {"pipeline": "pipeline", "width": 32, "height": 32, "steps": 20, "max_sequence_length": 24,
///      "fusion_prompt": "a {content} in {style} style",
///      "content": [{"trigger": "zorbo", "lora": "loras/content-zorbo.safetensors", "label": "crescent", "caption": "…"}, …],
///      "style": [{"trigger": "lumeq", "lora": "loras/style-lumeq.safetensors", "label": "zigzag", "caption": "…"}, …],
///      "classifiers": {"object": "classifiers/object.safetensors", "style": "classifiers/style.safetensors"},
///      "merger": "autolora-merger.safetensors", "demo_pairs": [[0, 0], [1, 3], …]}
///
/// Paths are relative to the folder. `label` is the class the classifiers should give an image
/// of that concept: the content's shape, the style's texture.
public struct ToyWorld: Sendable {
    public struct Concept: Sendable, Hashable {
        public let trigger: String
        public let lora: String
        public let label: String
        public let caption: String
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
    public let merger: String?
    public let retriever: String?
    public let demoPairs: [(content: Int, style: Int)]

    public static func load(folder: String) throws -> ToyWorld {
        let root = URL(fileURLWithPath: folder)
        let manifest = root.appendingPathComponent("world.json")
        guard let data = FileManager.default.contents(atPath: manifest.path) else {
            throw ModelError.notAModel(path: folder, reason: "no world.json: not a LoRAFuse toy world (train one with Tools/toyworld/train_world.py)")
        }
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
        let content = try concepts("content"), style = try concepts("style")
        let classifiers = object["classifiers"] as? [String: String] ?? [:]
        var pairs: [(content: Int, style: Int)] = []
        for pair in object["demo_pairs"] as? [[Int]] ?? [] {
            guard pair.count == 2, content.indices.contains(pair[0]), style.indices.contains(pair[1]) else {
                throw ModelError.notAModel(path: manifest.path, reason: "`demo_pairs` entries must be [content index, style index]")
            }
            pairs.append((pair[0], pair[1]))
        }
        if pairs.isEmpty { pairs = (0..<min(content.count, style.count)).map { ($0, $0) } }
        return ToyWorld(folder: folder, pipeline: path(pipeline), width: try number("width"), height: try number("height"),
                        steps: try number("steps"), maxSequenceLength: try number("max_sequence_length"),
                        fusionPrompt: object["fusion_prompt"] as? String ?? "a {content} in {style} style",
                        content: content, style: style, objectClassifier: classifiers["object"].map(path),
                        styleClassifier: classifiers["style"].map(path), merger: (object["merger"] as? String).map(path),
                        retriever: (object["retriever"] as? String).map(path), demoPairs: pairs)
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

/// Lays out equally sized RGB images in a grid, each scaled up by pixel repetition, with gaps.
public enum ImageGrid {
    public static func compose(_ rows: [[[UInt8]]], cellWidth: Int, cellHeight: Int, scale: Int = 1, gap: Int = 2,
                               background: (UInt8, UInt8, UInt8) = (255, 255, 255)) -> (pixels: [UInt8], width: Int, height: Int) {
        let columns = rows.map(\.count).max() ?? 0
        let (cw, ch) = (cellWidth * scale, cellHeight * scale)
        let width = columns * cw + (columns + 1) * gap, height = rows.count * ch + (rows.count + 1) * gap
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for index in stride(from: 0, to: pixels.count, by: 3) {
            (pixels[index], pixels[index + 1], pixels[index + 2]) = background
        }
        for (row, cells) in rows.enumerated() {
            for (column, cell) in cells.enumerated() where cell.count == cellWidth * cellHeight * 3 {
                let (left, top) = (gap + column * (cw + gap), gap + row * (ch + gap))
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
