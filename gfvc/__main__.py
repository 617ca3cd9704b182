from gfvc.cli import main

raise SystemExit(main())
