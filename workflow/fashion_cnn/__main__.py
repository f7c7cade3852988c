from fashion_cnn.cli import main

main()
