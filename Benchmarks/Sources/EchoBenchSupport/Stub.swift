public let stub = 1
