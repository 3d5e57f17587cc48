return { id = "n1" }
