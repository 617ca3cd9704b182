from suite.cli.main import main

raise SystemExit(main())
